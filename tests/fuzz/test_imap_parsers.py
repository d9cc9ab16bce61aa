"""IMAP's command parser over random and mutated input, literals included: a command, a
ParseError (BAD) or a wait for a literal, never another exception (issue #7).

The literals are fed as the session feeds them (gateway/imap/session.py): a synchronizing
or non-synchronizing literal gets its octets and the next line, an APPEND message a
staged stand-in. Parsed sequence sets are resolved and mailbox names decoded, as the
handlers do; those raise only the NO a handler answers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.imap import syntax
from gateway.imap.grammar import Limits, NeedLiteral, ParseError, SequenceSet, Staged
from gateway.imap.names import decode_name, pattern_regex
from gateway.imap.responses import No

from .corpus import IMAP_LINES, IMAP_TOKENS
from .mutations import fuzz_input

#: Small, so that nesting and sequence-set limits are reached by short input.
LIMITS = Limits(max_depth=6, max_sequence_items=20)
MAX_LITERAL = 512


def parse_with_literals(first: bytes, rng: random.Random) -> syntax.Command | None:
    """Parse as the session does: on NeedLiteral give the octets, then the next line."""
    buf = first + b"\r\n"
    provided: set[int] = set()
    external: dict[int, Staged] = {}
    for _ in range(8):
        try:
            return syntax.parse_command(buf, provided, external, LIMITS)[0]
        except ParseError:
            return None
        except NeedLiteral as need:
            assert need.offset < len(buf) and need.size >= 0
            if need.offset in provided or need.offset in external:
                raise AssertionError("a literal asked for twice") from None
            if need.message:
                external[need.offset] = Staged("staging/fuzz", need.size)
            else:
                if need.size > MAX_LITERAL:
                    return None  # the session refuses it before reading (max_literal)
                buf += bytes(rng.randrange(256) for _ in range(need.size))
                provided.add(need.offset)
            buf += rng.choice(IMAP_LINES)[rng.randrange(12) :] + b"\r\n"
    return None


def use(command: syntax.Command) -> None:
    """What handlers do first with the parsed values."""
    values = [getattr(command.args, f.name) for f in dataclasses.fields(command.args)]
    for value in values:
        if isinstance(value, SequenceSet):
            assert all(lo <= hi for lo, hi in value.resolve(7))
    for name in ("mailbox", "new_name"):
        wire = getattr(command.args, name, None)
        if isinstance(wire, bytes):
            with contextlib.suppress(No):
                decode_name(wire)
    patterns = getattr(command.args, "patterns", None)
    reference = getattr(command.args, "reference", b"")
    if isinstance(patterns, tuple | list) and isinstance(reference, bytes):
        for pattern in patterns:
            pattern_regex(reference.decode("utf-8", "replace"), pattern.decode("utf-8", "replace")).match("INBOX/x")


@settings(max_examples=1000)
@given(fuzz_input(IMAP_LINES, IMAP_TOKENS, max_size=2048), st.randoms(use_true_random=False))
def test_commands(line: bytes, rng: random.Random) -> None:
    command = parse_with_literals(line, rng)
    if command is not None:
        assert command.name in syntax.ARGUMENTS
        use(command)


@settings(max_examples=200)
@given(st.integers(1, 40), st.sampled_from([b"(", b"NOT ", b"OR ALL "]))
def test_nesting_is_bounded(depth: int, opener: bytes) -> None:
    """RFC 3501 §6.4.4 search keys nest; deep nesting is BAD, not a RecursionError."""
    closer = b")" if opener == b"(" else b""
    line = b"a SEARCH " + opener * depth + b"ALL" + closer * depth
    try:
        syntax.parse_command(line + b"\r\n", limits=LIMITS)
    except ParseError:
        assert depth > 1
    else:
        assert depth <= LIMITS.max_depth
