"""MIME metadata for IMAP (mailcore.mime): a corpus of real-world shapes with the answers
written down as the IMAP strings a server sends (compared byte for byte), section byte
ranges, and property tests.

Expected strings follow RFC 3501 §7.4.2 and what Dovecot answers for the same input;
``test_dovecot_style_message`` uses the features of Dovecot's own bodystructure test
(quoted-pair parameter, folded boundary, invalid transfer encoding, language list).
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mailcore import mime
from mailcore.mime import MessageMetadata, analyze, header_fields, render, section_bytes


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


def imap(meta: MessageMetadata) -> dict[str, bytes]:
    return {"ENVELOPE": render(meta.envelope), "BODYSTRUCTURE": render(meta.bodystructure), "BODY": render(meta.body)}


def fetch(raw: bytes, spec: str) -> bytes:
    """BODY[spec] the way an IMAP server would call the module."""
    meta = analyze(raw)
    m = re.fullmatch(r"([\d.]*?)\.?(HEADER\.FIELDS(?:\.NOT)?|HEADER|TEXT|MIME)?(?: \((.*)\))?", spec)
    assert m, spec
    section, part, names = m[1], m[2] or "", m[3]
    if part.startswith("HEADER.FIELDS"):
        return header_fields(section_bytes(raw, meta, section, "HEADER"), names.split(), part.endswith(".NOT"))
    return section_bytes(raw, meta, section, part)


# ---- corpus -------------------------------------------------------------------------------

SIMPLE = crlf("""\
Return-Path: <alice@example.com>
From: Alice Example <alice@example.com>
To: Bob <bob@example.org>, carol@example.net
Cc: "Doe, John" <john.doe@example.com>
Subject: Lunch tomorrow?
Date: Tue, 02 Jan 2024 10:00:00 +0100
Message-ID: <lunch-1@example.com>
In-Reply-To: <prev@example.org>
MIME-Version: 1.0
Content-Type: text/plain; charset="utf-8"
Content-Transfer-Encoding: 7bit

Noon at the usual place?
--\x20
Alice
""")

SIMPLE_ENVELOPE = (
    b'("Tue, 02 Jan 2024 10:00:00 +0100" "Lunch tomorrow?" '
    b'(("Alice Example" NIL "alice" "example.com")) (("Alice Example" NIL "alice" "example.com")) '
    b'(("Alice Example" NIL "alice" "example.com")) '
    b'(("Bob" NIL "bob" "example.org")(NIL NIL "carol" "example.net")) '
    b'(("Doe, John" NIL "john.doe" "example.com")) NIL "<prev@example.org>" "<lunch-1@example.com>")'
)

ALTERNATIVE = crlf("""\
From: news@example.com
To: bob@example.org
Subject: Newsletter
Date: Wed, 03 Jan 2024 08:00:00 +0000
MIME-Version: 1.0
Content-Type: multipart/alternative;
 boundary="==alt=="

This is a multi-part message in MIME format.

--==alt==
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Caf=C3=A9 news
--==alt==
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: quoted-printable

<p>Caf=C3=A9 news</p>
--==alt==--
""")

NESTED = crlf("""\
From: Carol <carol@example.net>
To: bob@example.org
Subject: Report
Date: Thu, 04 Jan 2024 12:00:00 -0500
Message-ID: <report@example.net>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

--outer
Content-Type: multipart/alternative; boundary="inner"

--inner
Content-Type: text/plain; charset=us-ascii

See attached.
--inner
Content-Type: multipart/related; boundary="rel"; type="text/html"

--rel
Content-Type: text/html; charset=us-ascii

<p>See <img src="cid:logo@example.net"></p>
--rel
Content-Type: image/png; name="logo.png"
Content-Transfer-Encoding: base64
Content-ID: <logo@example.net>
Content-Disposition: inline; filename="logo.png"

iVBORw0KGgo=
--rel--
--inner--

--outer
Content-Type: application/pdf; name="report.pdf"
Content-Transfer-Encoding: base64
Content-Disposition: attachment;
 filename*=utf-8''r%C3%A9sum%C3%A9.pdf; size=1234

JVBERi0xLjQK
JVBERi0xLjQK
--outer--
""")

FORWARDED = crlf("""\
From: Bob <bob@example.org>
To: dave@example.com
Subject: Fwd: Lunch tomorrow?
Date: Fri, 05 Jan 2024 09:30:00 +0000
Message-ID: <fwd@example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="fwd"

--fwd
Content-Type: text/plain; charset=us-ascii

See below.

--fwd
Content-Type: message/rfc822
Content-Disposition: inline

From: Alice Example <alice@example.com>
To: Bob <bob@example.org>
Subject: Lunch tomorrow?
Date: Tue, 02 Jan 2024 10:00:00 +0100
Message-ID: <lunch-1@example.com>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="alt2"

--alt2
Content-Type: text/plain

Noon?
--alt2
Content-Type: text/html

<b>Noon?</b>
--alt2--

--fwd--
""")
# The forwarded message is 17 lines, 311 characters plus 17 CRLFs.
FORWARDED_INNER = FORWARDED[FORWARDED.index(b"From: Alice") : FORWARDED.index(b"--alt2--") + 10]

ENCODED_WORDS = crlf("""\
From: =?UTF-8?Q?J=C3=B6rg_M=C3=BCller?= <joerg@example.de>
To: =?ISO-8859-1?B?SvZyZw==?= <j2@example.de>
Subject: =?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?=
 =?UTF-8?Q?_und_Umgebung?=
Date: Sat, 06 Jan 2024 18:00:00 +0100

Hallo
""")

GROUPS = crlf("""\
From: Eve <eve@example.com>
Sender: "" <sender@example.com>
Reply-To: <@relay.example:replies@example.com>
To: undisclosed-recipients:;
Cc: Team: ann@example.com, "Bo B." <bo@example.com>;, zed@example.com
Bcc: (hidden) frank@example.com (Frank)
Subject: groups

.
""")

EIGHT_BIT = crlf("""\
From: Jörg <joerg@example.de>
To: bob@example.org
Subject: Grüße aus Köln
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8; name="Grüße.txt"
Content-Transfer-Encoding: 8bit

Grüße!
""")


# ---- envelope and structure ------------------------------------------------------------


def test_simple_text_plain() -> None:
    meta = analyze(SIMPLE)
    assert imap(meta) == {
        "ENVELOPE": SIMPLE_ENVELOPE,
        "BODYSTRUCTURE": b'("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 38 3 NIL NIL NIL NIL)',
        "BODY": b'("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 38 3)',
    }
    assert (meta.size, meta.message_id, meta.subject, meta.sender, meta.date) == (
        len(SIMPLE), "<lunch-1@example.com>", "Lunch tomorrow?", "alice@example.com", "Tue, 02 Jan 2024 10:00:00 +0100")
    # RFC 3501 §6.4.5: a non-multipart message has only part 1, its body
    body = b"Noon at the usual place?\r\n-- \r\nAlice\r\n"
    assert fetch(SIMPLE, "1") == fetch(SIMPLE, "TEXT") == body
    assert fetch(SIMPLE, "") == SIMPLE
    assert fetch(SIMPLE, "HEADER") == SIMPLE[: -len(body)] and fetch(SIMPLE, "HEADER").endswith(b"7bit\r\n\r\n")
    assert fetch(SIMPLE, "2") == b"" and "2" not in meta.sections


def test_multipart_alternative() -> None:
    meta = analyze(ALTERNATIVE)
    assert imap(meta) == {
        "ENVELOPE": b'("Wed, 03 Jan 2024 08:00:00 +0000" "Newsletter" ((NIL NIL "news" "example.com")) '
                    b'((NIL NIL "news" "example.com")) ((NIL NIL "news" "example.com")) '
                    b'((NIL NIL "bob" "example.org")) NIL NIL NIL NIL)',
        # RFC 3501 §7.4.2: the CRLF before a delimiter belongs to the delimiter (RFC 2046 §5.1.1)
        "BODYSTRUCTURE": b'(("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 14 0 NIL NIL NIL NIL)'
                         b'("text" "html" ("charset" "utf-8") NIL NIL "quoted-printable" 21 0 NIL NIL NIL NIL)'
                         b' "alternative" ("boundary" "==alt==") NIL NIL NIL)',
        "BODY": b'(("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 14 0)'
                b'("text" "html" ("charset" "utf-8") NIL NIL "quoted-printable" 21 0) "alternative")',
    }
    assert fetch(ALTERNATIVE, "1") == b"Caf=C3=A9 news"
    assert fetch(ALTERNATIVE, "2") == b"<p>Caf=C3=A9 news</p>"
    assert fetch(ALTERNATIVE, "2.MIME") == b"Content-Type: text/html; charset=utf-8\r\n" \
                                          b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    assert fetch(ALTERNATIVE, "TEXT").startswith(b"This is a multi-part") and fetch(ALTERNATIVE, "TEXT").endswith(b"--==alt==--\r\n")


def test_nested_mixed_with_attachments() -> None:
    meta = analyze(NESTED)
    assert render(meta.bodystructure) == (
        b'((("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 13 0 NIL NIL NIL NIL)'
        b'(("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 43 0 NIL NIL NIL NIL)'
        b'("image" "png" ("name" "logo.png") "<logo@example.net>" NIL "base64" 12 NIL ("inline" ("filename" "logo.png")) NIL NIL)'
        b' "related" ("boundary" "rel" "type" "text/html") NIL NIL NIL)'
        b' "alternative" ("boundary" "inner") NIL NIL NIL)'
        # RFC 2231 parameters come merged and still encoded, after the plain ones (as Dovecot does)
        b'("application" "pdf" ("name" "report.pdf") NIL NIL "base64" 26 NIL'
        b' ("attachment" ("size" "1234" "filename*" "utf-8\'\'r%C3%A9sum%C3%A9.pdf")) NIL NIL)'
        b' "mixed" ("boundary" "outer") NIL NIL NIL)'
    )
    assert render(meta.body) == (
        b'((("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 13 0)'
        b'(("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 43 0)'
        b'("image" "png" ("name" "logo.png") "<logo@example.net>" NIL "base64" 12) "related") "alternative")'
        b'("application" "pdf" ("name" "report.pdf") NIL NIL "base64" 26) "mixed")'
    )
    assert sorted(meta.sections) == ["", "1", "1.1", "1.2", "1.2.1", "1.2.2", "2"]
    assert fetch(NESTED, "1.1") == b"See attached."
    assert fetch(NESTED, "1.2.1") == b'<p>See <img src="cid:logo@example.net"></p>'
    assert fetch(NESTED, "1.2.2") == b"iVBORw0KGgo="
    assert fetch(NESTED, "1.2.2.MIME").startswith(b"Content-Type: image/png") and fetch(NESTED, "1.2.2.MIME").endswith(
        b'filename="logo.png"\r\n\r\n')
    assert fetch(NESTED, "2") == b"JVBERi0xLjQK\r\nJVBERi0xLjQK"
    # a multipart part's body is everything between its header and the next outer delimiter
    assert fetch(NESTED, "1").startswith(b"--inner\r\n") and fetch(NESTED, "1").endswith(b"--inner--\r\n")
    assert fetch(NESTED, "1.2").startswith(b"--rel\r\n") and fetch(NESTED, "1.2").endswith(b"--rel--\r\n")
    assert fetch(NESTED, "1.MIME") == b'Content-Type: multipart/alternative; boundary="inner"\r\n\r\n'
    assert fetch(NESTED, "1.2.HEADER") == fetch(NESTED, "2.TEXT") == b""  # not message/rfc822 parts


def test_forwarded_message_rfc822() -> None:
    meta = analyze(FORWARDED)
    inner_env = (b'("Tue, 02 Jan 2024 10:00:00 +0100" "Lunch tomorrow?" (("Alice Example" NIL "alice" "example.com"))'
                 b' (("Alice Example" NIL "alice" "example.com")) (("Alice Example" NIL "alice" "example.com"))'
                 b' (("Bob" NIL "bob" "example.org")) NIL NIL NIL "<lunch-1@example.com>")')
    assert len(FORWARDED_INNER) == 345 and FORWARDED_INNER.count(b"\n") == 17
    assert render(meta.bodystructure) == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 12 1 NIL NIL NIL NIL)'
        b'("message" "rfc822" NIL NIL NIL "7bit" 345 ' + inner_env
        + b' (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0 NIL NIL NIL NIL)'
        b'("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 12 0 NIL NIL NIL NIL)'
        b' "alternative" ("boundary" "alt2") NIL NIL NIL) 17 NIL ("inline" NIL) NIL NIL)'
        b' "mixed" ("boundary" "fwd") NIL NIL NIL)'
    )
    assert render(meta.body) == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 12 1)'
        b'("message" "rfc822" NIL NIL NIL "7bit" 345 ' + inner_env
        + b' (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0)'
        b'("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 12 0) "alternative") 17) "mixed")'
    )
    assert sorted(meta.sections) == ["", "1", "2", "2.1", "2.2"]
    # RFC 3501 §6.4.5: BODY[2] is the whole message, 2.HEADER/2.TEXT its parts, 2.MIME the part header
    assert fetch(FORWARDED, "1") == b"See below.\r\n"
    assert fetch(FORWARDED, "2") == FORWARDED_INNER
    assert fetch(FORWARDED, "2.MIME") == b"Content-Type: message/rfc822\r\nContent-Disposition: inline\r\n\r\n"
    assert fetch(FORWARDED, "2.HEADER") == FORWARDED_INNER[: FORWARDED_INNER.index(b"--alt2")]
    assert fetch(FORWARDED, "2.TEXT") == FORWARDED_INNER[FORWARDED_INNER.index(b"--alt2") :]
    assert fetch(FORWARDED, "2.1") == b"Noon?" and fetch(FORWARDED, "2.2") == b"<b>Noon?</b>"
    assert fetch(FORWARDED, "2.1.MIME") == b"Content-Type: text/plain\r\n\r\n"
    assert fetch(FORWARDED, "2.HEADER.FIELDS (SUBJECT)") == b"Subject: Lunch tomorrow?\r\n\r\n"


def test_forwarded_single_part_message_is_numbered_under_the_part() -> None:
    raw = crlf("Content-Type: message/rfc822\n\nSubject: inner\n\nhello\n")
    meta = analyze(raw)
    assert render(meta.bodystructure) == (
        b'("message" "rfc822" NIL NIL NIL "7bit" 25 (NIL "inner" NIL NIL NIL NIL NIL NIL NIL NIL)'
        b' ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 7 1 NIL NIL NIL NIL) 3 NIL NIL NIL NIL)')
    assert fetch(raw, "1") == b"Subject: inner\r\n\r\nhello\r\n"
    assert fetch(raw, "1.1") == fetch(raw, "1.TEXT") == b"hello\r\n"
    assert fetch(raw, "1.HEADER") == fetch(raw, "1.1.MIME") == b"Subject: inner\r\n\r\n"


def test_dovecot_style_message() -> None:
    """The features of Dovecot's test-imap-bodystructure.c; the answers are its rules."""
    raw = crlf("""\
From: user@domain.org
Mime-Version: 1.0
Content-Type: multipart/mixed; boundary="a
 b"

prologue
--a b
Content-Type: text/x-myown; charset=us-ascii; foo="quoted\\"string"
Content-ID: <id@example.com>
Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==
Content-Disposition: inline; foo=bar
Content-Description: a description
Content-Language: en, fi, se
Content-Location: http://example.com/test.txt

hello

--a b
Content-Type: text/plain
Content-Transfer-Encoding: ?invalid

x
--a b--
epilogue
""")
    assert render(analyze(raw).bodystructure) == (
        b'(("text" "x-myown" ("charset" "us-ascii" "foo" "quoted\\"string") "<id@example.com>" "a description"'
        b' "7bit" 7 1 "Q2hlY2sgSW50ZWdyaXR5IQ==" ("inline" ("foo" "bar")) ("en" "fi" "se") "http://example.com/test.txt")'
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 1 0 NIL NIL NIL NIL)'
        b' "mixed" ("boundary" "a b") NIL NIL NIL)'
    )


def test_encoded_words_stay_raw_in_envelope() -> None:
    meta = analyze(ENCODED_WORDS)
    assert render(meta.envelope) == (
        b'("Sat, 06 Jan 2024 18:00:00 +0100" "=?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?= =?UTF-8?Q?_und_Umgebung?="'
        b' (("=?UTF-8?Q?J=C3=B6rg_M=C3=BCller?=" NIL "joerg" "example.de"))'
        b' (("=?UTF-8?Q?J=C3=B6rg_M=C3=BCller?=" NIL "joerg" "example.de"))'
        b' (("=?UTF-8?Q?J=C3=B6rg_M=C3=BCller?=" NIL "joerg" "example.de"))'
        b' (("=?ISO-8859-1?B?SvZyZw==?=" NIL "j2" "example.de")) NIL NIL NIL NIL)'
    )
    assert meta.subject == "Grüße aus Köln und Umgebung"  # decoded for display and events only
    assert meta.sender == "joerg@example.de"
    # no MIME-Version and no Content-Type: RFC 2045 §5.2 defaults
    assert render(meta.bodystructure) == b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 7 1 NIL NIL NIL NIL)'


def test_group_syntax_routes_and_comments() -> None:
    env = analyze(GROUPS).envelope
    assert [render(x) for x in env[2:8]] == [
        b'(("Eve" NIL "eve" "example.com"))',
        b'((NIL NIL "sender" "example.com"))',  # empty display name -> NIL
        b'((NIL "@relay.example" "replies" "example.com"))',  # obs-route -> adl
        # RFC 3501 §7.4.2: group start (NIL NIL name NIL), group end (NIL NIL NIL NIL)
        b'((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL))',
        b'((NIL NIL "Team" NIL)(NIL NIL "ann" "example.com")("Bo B." NIL "bo" "example.com")(NIL NIL NIL NIL)'
        b'(NIL NIL "zed" "example.com"))',
        b'(("Frank" NIL "frank" "example.com"))',  # a trailing comment names an addr-spec (Dovecot)
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("John Q. Public <jqp@example.com>", b'(("John Q. Public" NIL "jqp" "example.com"))'),
        ('"Joe \\"Q\\" Public" <joe@example.com>', b'(("Joe \\"Q\\" Public" NIL "joe" "example.com"))'),
        ('"john doe"@example.com', b'((NIL NIL "john doe" "example.com"))'),
        ("user@[192.0.2.1]", b'((NIL NIL "user" "[192.0.2.1]"))'),
        ("postmaster", b'((NIL NIL "postmaster" "MISSING_DOMAIN"))'),  # Dovecot's placeholder
        ("<>", b'((NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN"))'),
        ("a@b, , c@d,", b'((NIL NIL "a" "b")(NIL NIL "c" "d"))'),
        ("Al <al@example.com", b'(("Al" NIL "al" "example.com"))'),
        ('" " <sp@example.com>, ""@example.com', b'((" " NIL "sp" "example.com")(NIL NIL "MISSING_MAILBOX" "example.com"))'),
        ("", b"NIL"),
        ("  ", b"NIL"),
    ],
)
def test_address_forms(value: str, expected: bytes) -> None:
    raw = b"To: " + value.encode() + b"\r\n\r\n"
    assert render(analyze(raw).envelope[5]) == expected


def test_missing_headers_are_nil() -> None:
    meta = analyze(b"\r\nJust a body\r\n")
    assert render(meta.envelope) == b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
    assert render(meta.bodystructure) == b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 13 1 NIL NIL NIL NIL)'
    assert (meta.message_id, meta.subject, meta.sender, meta.date) == (None, None, None, None)
    assert fetch(b"\r\nJust a body\r\n", "HEADER") == b"\r\n"
    only_from = analyze(crlf("From: a@b\nSubject:\n\nx"))
    assert render(only_from.envelope) == b'(NIL "" ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) NIL NIL NIL NIL NIL)'


@pytest.mark.parametrize(
    ("raw", "size", "lines"),
    [(b"", 0, 0), (b"Subject: no body, no blank line\r\n", 0, 0), (b"Subject: x\r\n\r\n", 0, 0)],
)
def test_empty_bodies(raw: bytes, size: int, lines: int) -> None:
    meta = analyze(raw)
    assert meta.bodystructure[6:8] == [size, lines]
    assert meta.sections["1"]["body"] == [len(raw), len(raw)]
    assert fetch(raw, "HEADER") == raw


# ---- malformed MIME ----------------------------------------------------------------------

PLAIN_DEFAULT = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" %d %d NIL NIL NIL NIL)'


def test_multipart_without_boundary_is_text_plain() -> None:
    raw = crlf("MIME-Version: 1.0\nContent-Type: multipart/mixed\n\n--x\nContent-Type: text/plain\n\nhi\n--x--\n")
    meta = analyze(raw)
    assert render(meta.bodystructure) == PLAIN_DEFAULT % (44, 5)
    assert fetch(raw, "1") == fetch(raw, "TEXT") == raw[raw.index(b"--x") :]


def test_nested_multipart_without_boundary_ends_at_the_outer_delimiter() -> None:
    raw = crlf("Content-Type: multipart/mixed; boundary=o\n\n--o\nContent-Type: multipart/related\n\nbody\n"
               "--o\n\nlast\n--o--\n")
    assert render(analyze(raw).body) == (b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 4 0)'
                                         b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 4 0) "mixed")')
    assert fetch(raw, "1") == b"body" and fetch(raw, "2") == b"last"


def test_multipart_whose_boundary_never_appears_is_text_plain() -> None:
    raw = crlf('Content-Type: multipart/mixed; boundary="nope"\n\nplain text\n--other\n')
    assert render(analyze(raw).bodystructure) == PLAIN_DEFAULT % (21, 2)
    raw = crlf('Content-Type: multipart/mixed; boundary="b"\n\n--b--\n')  # no parts at all
    assert render(analyze(raw).bodystructure) == PLAIN_DEFAULT % (7, 1)


def test_unterminated_multipart_runs_to_the_end() -> None:
    raw = crlf("""\
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=b

--b
Content-Type: text/plain

first
--b
Content-Type: text/plain

second, cut off
""")
    meta = analyze(raw)
    assert render(meta.body) == (b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0)'
                                 b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 17 1) "mixed")')
    assert fetch(raw, "2") == b"second, cut off\r\n"


def test_outer_delimiter_closes_inner_multipart() -> None:
    raw = crlf("""\
Content-Type: multipart/mixed; boundary=out

--out
Content-Type: multipart/alternative; boundary=in

--in

inner one
--out

last
--out--
""")
    assert render(analyze(raw).body) == (
        b'((("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 9 0) "alternative")'
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 4 0) "mixed")')
    assert fetch(raw, "1.1") == b"inner one" and fetch(raw, "2") == b"last"


def test_prefix_boundaries_longest_match_wins() -> None:
    raw = crlf("""\
Content-Type: multipart/mixed; boundary=ab

--ab
Content-Type: multipart/mixed; boundary=abc

--abc

x
--abc--
--ab--
""")
    assert render(analyze(raw).body) == (
        b'((("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 1 0) "mixed") "mixed")')


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("garbage", PLAIN_DEFAULT % (2, 1)),
        ("text/", PLAIN_DEFAULT % (2, 1)),
        ("/plain", PLAIN_DEFAULT % (2, 1)),
        ("text/plain; charset", PLAIN_DEFAULT % (2, 1)),
        ("TEXT/HTML (comment); CHARSET=Latin1", b'("TEXT" "HTML" ("CHARSET" "Latin1") NIL NIL "7bit" 2 1 NIL NIL NIL NIL)'),
        ("application/octet-stream;; =x; name=a.bin", b'("application" "octet-stream" ("name" "a.bin") NIL NIL "7bit" 2 NIL NIL NIL NIL)'),
        ("message/rfc822", b'("message" "rfc822" NIL NIL NIL "7bit" 2 (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)'
                           b' ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL) 1 NIL NIL NIL NIL)'),
    ],
)
def test_bad_or_odd_content_type(content_type: str, expected: bytes) -> None:
    raw = b"MIME-Version: 1.0\r\nContent-Type: " + content_type.encode() + b"\r\n\r\nx\n"
    assert render(analyze(raw).bodystructure) == expected


def test_content_headers_need_mime() -> None:
    # Dovecot: without MIME-Version or Content-Type, Content-* fields are not MIME
    raw = crlf("Content-Transfer-Encoding: base64\nContent-ID: <x>\n\nx")
    assert render(analyze(raw).body) == b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 1 0)'
    raw = crlf("Content-Type: text/plain\nContent-Transfer-Encoding: base64 junk\nContent-ID: <x>\n\nx")
    assert render(analyze(raw).body) == b'("text" "plain" ("charset" "us-ascii") "<x>" NIL "7bit" 1 0)'


def test_rfc2231_continuations() -> None:
    raw = crlf("MIME-Version: 1.0\nContent-Type: application/x-stuff;\n title*0*=us-ascii'en'This%20is;\n"
               " title*1=\" 50% fun\"; url*1=b; url*0=a; gap*0=x; gap*2=y\n\nx")
    assert analyze(raw).bodystructure[2] == [
        "gap*0", "x", "gap*2", "y", "title*", "us-ascii'en'This%20is 50%25 fun", "url", "ab"]


def test_digest_parts_default_to_message_rfc822() -> None:
    raw = crlf('Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: one\n\nbody\n--d--\n')
    assert render(analyze(raw).body) == (
        b'(("message" "rfc822" NIL NIL NIL "7bit" 20 (NIL "one" NIL NIL NIL NIL NIL NIL NIL NIL)'
        b' ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 4 0) 2) "digest")')


def test_delimiter_inside_a_part_header() -> None:
    raw = crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/html\n--b\n\nsecond\n--b--\n")
    meta = analyze(raw)
    assert render(meta.body) == (b'(("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 0 0)'
                                 b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 0) "mixed")')
    assert fetch(raw, "1.MIME") == b"Content-Type: text/html"  # its CRLF belongs to the delimiter


def test_deep_nesting_does_not_raise() -> None:
    raw = b"Content-Type: message/rfc822\r\n\r\n" * 500 + b"end\r\n"
    meta = mime._analyze(raw)
    assert len(meta.sections) > 10 and render(meta.bodystructure).endswith(b"NIL NIL NIL NIL)")
    raw = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (n, n) for n in range(500))
    assert mime._analyze(raw + b"x").size == len(raw) + 1


def test_many_parts_without_blank_lines_stay_linear() -> None:
    # each part's header search stops at its delimiter (it once scanned to the end: ~10 s here);
    # tests assert behaviour, not time, so this checks the parts come out right
    raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + (b"--b\r\nX-A: " + b"y" * 2000 + b"\r\n") * 5000
    assert len(analyze(raw).sections) == 5001


# ---- 8-bit and line endings ------------------------------------------------------------


def test_eight_bit_headers_use_literals() -> None:
    meta = analyze(EIGHT_BIT)
    subject = "Grüße aus Köln".encode()
    assert render(meta.envelope) == (
        b"(NIL {17}\r\n" + subject + b" (({5}\r\nJ\xc3\xb6rg NIL \"joerg\" \"example.de\"))"
        b" (({5}\r\nJ\xc3\xb6rg NIL \"joerg\" \"example.de\")) (({5}\r\nJ\xc3\xb6rg NIL \"joerg\" \"example.de\"))"
        b' ((NIL NIL "bob" "example.org")) NIL NIL NIL NIL)')
    assert render(meta.body) == (b'("text" "plain" ("charset" "utf-8" "name" {11}\r\nGr\xc3\xbc\xc3\x9fe.txt)'
                                 b' NIL NIL "8bit" 10 1)')
    assert meta.subject == "Grüße aus Köln"  # display form: the bytes were UTF-8
    # JSON form: latin-1 characters, one per byte, so the exact bytes survive
    assert meta.envelope[1] == subject.decode("latin-1")
    assert analyze("Subject: caf\xe9\r\n\r\n".encode("latin-1")).subject == "café"
    mixed = "Subject: Grüße =?iso-8859-1?q?caf=E9?= =?utf-8?q?_=E2=82=AC?= or =?bogus?q?x?=\r\n\r\n".encode()
    assert analyze(mixed).subject == "Grüße café € or =?bogus?q?x?="


def test_lf_only_message() -> None:
    raw = SIMPLE.replace(b"\r\n", b"\n")
    meta = analyze(raw)
    assert render(meta.envelope) == SIMPLE_ENVELOPE
    # sizes are raw octets (Dovecot would report the CRLF size, 41)
    assert render(meta.bodystructure) == b'("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 35 3 NIL NIL NIL NIL)'
    assert fetch(raw, "1") == b"Noon at the usual place?\n-- \nAlice\n"
    raw = NESTED.replace(b"\r\n", b"\n")
    assert sorted(analyze(raw).sections) == ["", "1", "1.1", "1.2", "1.2.1", "1.2.2", "2"]
    assert fetch(raw, "1.2.2") == b"iVBORw0KGgo=" and fetch(raw, "2") == b"JVBERi0xLjQK\nJVBERi0xLjQK"
    assert fetch(raw, "2.MIME").endswith(b"size=1234\n\n")


def test_mixed_line_endings() -> None:
    raw = b"Content-Type: multipart/mixed; boundary=b\n\r\n--b\r\n\nx\n--b--\r\n"
    assert render(analyze(raw).body) == b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 1 0) "mixed")'


# ---- HEADER.FIELDS -------------------------------------------------------------------------

HDR = (b"Received: from a\r\n by b;\r\n Tue, 2 Jan 2024\r\nSubject: one\r\nX-Spam: yes\r\n"
       b"subject : two\r\nReceived: from c\r\n\r\n")


def test_header_fields() -> None:
    # RFC 3501 §6.4.5: names are case-insensitive, fields keep their bytes, the blank line ends it
    assert header_fields(HDR, ["SUBJECT"], False) == b"Subject: one\r\nsubject : two\r\n\r\n"
    assert header_fields(HDR, ["received", "x-spam"], False) == (
        b"Received: from a\r\n by b;\r\n Tue, 2 Jan 2024\r\nX-Spam: yes\r\nReceived: from c\r\n\r\n")
    assert header_fields(HDR, ["Received", "Subject"], True) == b"X-Spam: yes\r\n\r\n"
    assert header_fields(HDR, ["nothing"], False) == b"\r\n"
    assert header_fields(b"A: 1\nB: 2\n\n", ["b"], False) == b"B: 2\n\r\n"
    assert header_fields(b"A: 1\r\nB: 2", ["b"], False) == b"B: 2\r\n\r\n"  # header cut off at EOF


def test_header_fields_of_sections() -> None:
    assert fetch(NESTED, "HEADER.FIELDS (From To)") == b"From: Carol <carol@example.net>\r\nTo: bob@example.org\r\n\r\n"
    assert fetch(NESTED, "HEADER.FIELDS.NOT (From To Subject Date Message-ID MIME-Version)") == (
        b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n')
    assert fetch(SIMPLE, "HEADER.FIELDS (Content-Type Cc)") == (
        b'Cc: "Doe, John" <john.doe@example.com>\r\nContent-Type: text/plain; charset="utf-8"\r\n\r\n')


# ---- render, JSON round trip ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, b"NIL"),
        (0, b"0"),
        (Decimal(42), b"42"),
        ("", b'""'),
        ("NIL", b'"NIL"'),
        ('say "hi"\\', b'"say \\"hi\\"\\\\"'),
        ('""""""', b'{6}\r\n""""""'),  # more than four quoted-specials: literal (Dovecot)
        ("a\r\nb", b"{4}\r\na\r\nb"),
        ("caf\xe9", b"{4}\r\ncaf\xe9"),
        ("\u20ac", b"{3}\r\n\xe2\x82\xac"),  # not latin-1: UTF-8
        ("a\0b", b"{3}\r\na\x80b"),
        ([], b"()"),
        ([["a"], ["b"], "c", ["d"], ["e"]], b'(("a")("b") "c" ("d") ("e"))'),
        ([[None, None, "m", "h"], [None, None, None, None]], b'((NIL NIL "m" "h")(NIL NIL NIL NIL))'),
    ],
)
def test_render(value: Any, expected: bytes) -> None:
    assert render(value) == expected


def test_item_round_trip() -> None:
    for raw in (SIMPLE, NESTED, FORWARDED, EIGHT_BIT, GROUPS):
        meta = analyze(raw)
        item = json.loads(json.dumps(meta.to_item()))
        assert MessageMetadata.from_item(item) == meta
        as_dynamo = json.loads(json.dumps(item), parse_int=Decimal)  # boto3 hands numbers back as Decimal
        back = MessageMetadata.from_item(as_dynamo)
        assert back == meta and render(back.bodystructure) == render(meta.bodystructure)


def test_corpus_never_uses_the_fallback() -> None:
    for raw in (SIMPLE, ALTERNATIVE, NESTED, FORWARDED, ENCODED_WORDS, GROUPS, EIGHT_BIT):
        assert analyze(raw) == mime._analyze(raw)


# ---- properties ------------------------------------------------------------------------------


def parse_imap(data: bytes) -> Any:
    """A minimal reader of IMAP values (RFC 3501 §9: nil, number, quoted, literal, list)."""
    pos = 0

    def value() -> Any:
        nonlocal pos
        if data.startswith(b"NIL", pos):
            pos += 3
            return None
        if data[pos : pos + 1] == b"(":
            pos += 1
            items = []
            while data[pos : pos + 1] != b")":
                pos += data[pos : pos + 1] == b" "
                items.append(value())
            pos += 1
            return items
        if data[pos : pos + 1] == b'"':
            m = re.compile(rb'"((?:[^"\\\r\n]|\\["\\])*)"').match(data, pos)
            assert m, data[pos:]
            pos = m.end()
            return re.sub(rb'\\(["\\])', rb"\1", m[1]).decode("latin-1")
        if data[pos : pos + 1] == b"{":
            m = re.compile(rb"\{(\d+)\}\r\n").match(data, pos)
            assert m
            pos = m.end() + int(m[1])
            return data[m.end() : pos].decode("latin-1")
        m = re.compile(rb"\d+").match(data, pos)
        assert m, data[pos:]
        pos = m.end()
        return int(m[0])

    result = value()
    assert pos == len(data)
    return result


def check(raw: bytes) -> MessageMetadata:
    meta = mime._analyze(raw)  # the strict path: a bug must show up here, not hide in the fallback
    n = len(raw)
    assert meta.size == n
    for path, sec in meta.sections.items():
        (hs, he), (bs, be) = sec["header"], sec["body"]
        assert 0 <= hs <= he <= bs <= be <= n, (path, sec)
        if "text" in sec:
            assert bs <= sec["text"][0] <= sec["text"][1] <= be
        if "." in path:  # a part lies inside its parent's body
            parent = meta.sections[path.rsplit(".", 1)[0]]
            assert parent["body"][0] <= hs and be <= parent["body"][1]
    for value in (meta.envelope, meta.bodystructure, meta.body):
        assert parse_imap(render(value)) == json.loads(json.dumps(value))
    assert MessageMetadata.from_item(json.loads(json.dumps(meta.to_item()))) == meta
    return meta


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_random_bytes(raw: bytes) -> None:
    check(raw)
    assert analyze(raw) == mime._analyze(raw)


FRAGMENTS = [
    b"--a\r\n", b"--a--\r\n", b"--b\r\n", b"--b--\n", b"--ab\r\n", b"\r\n", b"\n", b"text line\r\n", b"x",
    b"Content-Type: multipart/mixed; boundary=a\r\n", b"Content-Type: multipart/alternative; boundary=\"b\"\r\n",
    b"Content-Type: multipart/digest; boundary=ab\r\n", b"Content-Type: message/rfc822\r\n",
    b"Content-Type: text/plain; charset=utf-8\r\n", b"MIME-Version: 1.0\r\n", b" folded\r\n",
    b"From: \"A\" <a@b>, g: c@d;\r\n", b"Subject: =?utf-8?q?=C3=A9?= \xc3\xa9\r\n", b"To: (\"x\r\n", b"\x00\xff",
]


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=40))
def test_random_mime_shapes(fragments: list[bytes]) -> None:
    raw = b"".join(fragments)
    meta = check(raw)
    for path in meta.sections:
        for part in ("", "HEADER", "TEXT", "MIME"):
            got = section_bytes(raw, meta, path, part)
            assert got in raw
            if part == "HEADER" and got:
                header_fields(got, ["subject"], True)
