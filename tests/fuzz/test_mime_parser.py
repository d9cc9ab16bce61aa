"""The MIME parser (mailcore.mime) over random and mutated messages: ENVELOPE,
BODYSTRUCTURE and the section map are computed without an exception, and hold together
(the invariants of tests/unit/test_mime.py's ``check``, on the strict path that has no
fallback), and render as IMAP strings. ``analyze`` promises to never raise (issue #7)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from mailcore import mime
from mailcore.mime import analyze, header_fields, render, section_bytes

from tests.unit.test_mime import check

from .corpus import MESSAGES, MIME_TOKENS
from .mutations import fuzz_input


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(fuzz_input(MESSAGES, MIME_TOKENS, max_size=8192))
def test_messages(raw: bytes) -> None:
    # render() writes NUL as 0x80 (Dovecot's rule), so check's round trip is for NUL-free input.
    meta = check(raw) if b"\0" not in raw else mime._analyze(raw)
    for value in (meta.envelope, meta.bodystructure, meta.body):
        render(value)
    assert analyze(raw) == meta
    for path in meta.sections:
        for part in ("", "HEADER", "TEXT", "MIME"):
            got = section_bytes(raw, meta, path, part)
            assert got in raw
            if part == "HEADER":
                header_fields(got, ["subject", "from"], exclude=False)
