"""SEARCH programs (mailcore.search), evaluated as the function and the gateway do
(RFC 3501 §6.4.4)."""

from __future__ import annotations

import datetime

import pytest
from mailcore import search
from mailcore.errors import InvalidInput
from mailcore.mime import analyze

RAW = (
    b"From: =?UTF-8?Q?J=C3=B6rg?= <joerg@example.de>\r\nTo: Bob <bob@example.org>\r\n"
    b"Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\nDate: Sat, 06 Jan 2024 23:30:00 -0800\r\nX-Tag: Blue\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n"
    b"\r\nK=C3=A4se und Brot\r\n"
)
MESSAGE = search.Candidate(
    uid=5, flags=["\\Seen", "$Work"], size=len(RAW), internaldate=int(datetime.datetime(2024, 1, 7, 12, tzinfo=datetime.UTC).timestamp()),
    modseq=9, meta=analyze(RAW).to_item(), raw=lambda: RAW, sha256="",
)


@pytest.mark.parametrize(
    ("program", "matches"),
    [
        (["all"], True),
        (["flag", "\\SEEN"], True),  # RFC 3501 §2.3.2: flags are case-insensitive
        (["noflag", "$work"], False),
        (["uid", [[1, 4], [5, 5]]], True),
        (["uid", []], False),
        (["larger", len(RAW) - 1], True),
        (["smaller", len(RAW)], False),
        (["on", "2024-01-07"], True),
        (["before", "2024-01-07"], False),
        (["since", "2024-01-07"], True),
        (["senton", "2024-01-06"], True),  # the Date: field's own date, not UTC's
        (["sentsince", "2024-01-07"], False),
        (["modseq", 9], True),
        (["modseq", 10], False),
        (["address", "from", "JÖRG"], True),  # RFC 2047 decoded, case-insensitive
        (["address", "from", "joerg@example"], True),
        (["address", "to", "alice"], False),
        (["subject", "grüße"], True),
        (["header", "x-tag", "blu"], True),
        (["header", "X-Tag", ""], True),
        (["header", "X-None", ""], False),
        (["body", "käse"], True),  # quoted-printable and UTF-8 decoded
        (["body", "bob@example.org"], False),
        (["text", "bob@example.org"], True),
        (["or", ["flag", "\\Draft"], ["not", ["flag", "\\Draft"]]], True),
        (["and", ["flag", "\\Seen"], ["flag", "\\Flagged"]], False),
    ],
)
def test_matches(program, matches):
    search.check(program)
    assert search.matches(program, MESSAGE) is matches


def test_needs():
    assert search.needs(["and", ["flag", "\\Seen"], ["uid", [[1, 2]]]]) == search.Needs(False, False)
    assert search.needs(["not", ["subject", "x"]]) == search.Needs(True, False)
    assert search.needs(["or", ["all"], ["body", "x"]]) == search.Needs(False, True)


def test_uid_bounds():
    assert search.uid_bounds(["and", ["uid", [[3, 9], [20, 30]]], ["uid", [[1, 25]]]]) == (3, 25)
    assert search.uid_bounds(["all"]) == (1, None)


@pytest.mark.parametrize(
    "program",
    [
        "nope",
        '["bogus"]',
        '["or", ["all"]]',
        '["uid", [[1]]]',
        '["larger", "1"]',
        '["before", "2024-1-1"]',
        '["address", "subject", "x"]',
        "[" * 100 + '"all"' + "]" * 100,
    ],
)
def test_malformed_programs(program):
    with pytest.raises(InvalidInput):
        search.loads(program)
