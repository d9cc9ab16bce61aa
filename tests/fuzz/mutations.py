"""Mutating valid input, the fuzzer's half that random bytes cannot do: a random string
almost never gets past a parser's first token, a mutated valid command reaches every
branch behind it.

:func:`mutate` is plain (a :class:`random.Random` drives it), so the conversation fuzz
over sockets uses it with a fixed seed and the parser fuzz through Hypothesis
(:func:`mutants`), which picks the seed, the random state and the number of steps.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from hypothesis import strategies as st

#: Octets that matter to every line protocol here: line ends, NUL, 8-bit, quoting, nesting.
PUNCTUATION = (
    b"\r",
    b"\n",
    b"\r\n",
    b"\x00",
    b"\xff",
    b"\xc3\xa9",
    b"\xe9",
    b" ",
    b"\t",
    b'"',
    b"\\",
    b"(",
    b")",
    b"<",
    b">",
    b"[",
    b"]",
    b"{",
    b"}",
    b"*",
    b"%",
    b"=",
    b"+",
    b":",
    b",",
    b".",
    b"-",
    b"0",
    b"4294967296",
    b"18446744073709551616",
    b"99999999999999999999999",
)


def mutate(rng: random.Random, seed: bytes, tokens: Sequence[bytes], steps: int, max_size: int = 4096) -> bytes:
    """``seed`` after ``steps`` edits: insert, delete, flip a bit, splice in a token,
    overwrite with a token, or repeat a slice."""
    data = bytearray(seed)
    vocabulary = [*tokens, *PUNCTUATION]
    for _ in range(steps):
        pos = rng.randint(0, len(data))
        end = min(len(data), pos + rng.randint(1, 8))
        op = rng.randrange(6)
        if op == 0:
            data[pos:pos] = bytes([rng.randrange(256)])
        elif op == 1:
            del data[pos:end]
        elif op == 2 and pos < len(data):
            data[pos] ^= 1 << rng.randrange(8)
        elif op == 3:
            data[pos:pos] = rng.choice(vocabulary)
        elif op == 4:
            data[pos:end] = rng.choice(vocabulary)
        else:
            data[pos:pos] = data[pos:end] * rng.randint(1, 4)
    return bytes(data[:max_size])


def mutants(seeds: Sequence[bytes], tokens: Sequence[bytes], max_size: int = 4096) -> st.SearchStrategy[bytes]:
    """Hypothesis: a seed, mutated 0 to 12 times (0 to 2 half the time)."""
    return st.builds(
        lambda rng, seed, steps: mutate(rng, seed, tokens, steps, max_size),
        st.randoms(use_true_random=False),
        st.sampled_from(seeds),
        st.one_of(st.integers(0, 2), st.integers(0, 12)),  # few edits half the time: deeper into the grammar
    )


def fuzz_input(seeds: Sequence[bytes], tokens: Sequence[bytes], max_size: int = 4096) -> st.SearchStrategy[bytes]:
    """Mutants most of the time, random bytes and token soups the rest."""
    soup = st.lists(st.sampled_from([*tokens, *PUNCTUATION]), max_size=40).map(b"".join)
    return st.one_of(mutants(seeds, tokens, max_size), st.binary(max_size=max_size // 8), soup)
