"""FETCH ENVELOPE, BODY, BODYSTRUCTURE and BODY[section] end to end, over the corpus of
real-world shapes in tests/unit/test_mime.py (multipart/alternative, nested mixed with
attachments, message/rfc822, encoded words, groups, 8-bit headers, malformed MIME),
with the answers written down there (RFC 3501 §7.4.2), now as they come over the wire."""

from __future__ import annotations

import pytest

from tests.integration.test_imap_support import Raw, deliver, login_raw
from tests.unit import test_mime as corpus

pytest_plugins = ["tests.integration.test_imap_support"]

CASES = {
    "simple": corpus.SIMPLE,
    "alternative": corpus.ALTERNATIVE,
    "nested": corpus.NESTED,
    "forwarded": corpus.FORWARDED,
    "encoded-words": corpus.ENCODED_WORDS,
    "groups": corpus.GROUPS,
    "eight-bit": corpus.EIGHT_BIT,
    "no-boundary": corpus.crlf("Content-Type: multipart/mixed\n\nno boundary here\n"),
}


@pytest.fixture(scope="module")
def mailbox(module_store, function_transport, module_user, gateway):
    """The corpus in INBOX, UID n for the n-th case, and a session that selected it."""
    from tests.integration.test_imap_support import TEST_SETTINGS

    gateway.gateway.services["imap"] = TEST_SETTINGS
    for raw in CASES.values():
        deliver(module_store, function_transport, module_user, raw)
    client = Raw.open(gateway)
    login_raw(client, module_user)
    client.command(b"s", b"EXAMINE INBOX")
    yield client
    client.close()


def _fetch(client: Raw, uid: int, items: bytes) -> bytes:
    reply = client.command(b"f", b"UID FETCH %d (%s)" % (uid, items))
    assert reply[-1].startswith(b"f OK"), reply
    assert len(reply) == 2, reply
    return reply[0]


@pytest.mark.parametrize("case", list(CASES))
def test_structures_match_the_corpus(mailbox, case):
    uid = list(CASES).index(case) + 1
    meta = corpus.analyze(CASES[case])
    line = _fetch(mailbox, uid, b"ENVELOPE BODY BODYSTRUCTURE")
    expected = (b"* %d FETCH (UID %d ENVELOPE " % (uid, uid) + corpus.render(meta.envelope)
                + b" BODY " + corpus.render(meta.body) + b" BODYSTRUCTURE " + corpus.render(meta.bodystructure) + b")")
    assert line == expected


def test_simple_written_down(mailbox):
    line = _fetch(mailbox, 1, b"ENVELOPE BODYSTRUCTURE")
    assert line == (b"* 1 FETCH (UID 1 ENVELOPE " + corpus.SIMPLE_ENVELOPE
                    + b' BODYSTRUCTURE ("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 38 3 NIL NIL NIL NIL))')


def test_nested_written_down(mailbox):
    line = _fetch(mailbox, 3, b"BODY")
    assert line == (
        b'* 3 FETCH (UID 3 BODY ((("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 13 0)'
        b'(("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 43 0)'
        b'("image" "png" ("name" "logo.png") "<logo@example.net>" NIL "base64" 12) "related") "alternative")'
        b'("application" "pdf" ("name" "report.pdf") NIL NIL "base64" 26) "mixed"))'
    )


@pytest.mark.parametrize(
    ("case", "section", "expected"),
    [
        ("nested", b"1.1", b"See attached."),
        ("nested", b"1.2.2", b"iVBORw0KGgo="),
        ("nested", b"1.MIME", b'Content-Type: multipart/alternative; boundary="inner"\r\n\r\n'),
        ("alternative", b"2", b"<p>Caf=C3=A9 news</p>"),
        ("forwarded", b"2", corpus.FORWARDED_INNER),
        ("forwarded", b"2.HEADER.FIELDS (SUBJECT)", b"Subject: Lunch tomorrow?\r\n\r\n"),
        ("forwarded", b"2.1", b"Noon?"),
        ("simple", b"TEXT", b"Noon at the usual place?\r\n-- \r\nAlice\r\n"),
    ],
)
def test_sections(mailbox, case, section, expected):
    uid = list(CASES).index(case) + 1
    line = _fetch(mailbox, uid, b"BODY.PEEK[" + section + b"]")
    assert line == b"* %d FETCH (UID %d BODY[%s] {%d}\r\n%s)" % (uid, uid, section, len(expected), expected)


def test_eight_bit_header_strings_are_literals(mailbox):
    uid = list(CASES).index("eight-bit") + 1
    line = _fetch(mailbox, uid, b"ENVELOPE")
    assert "{%d}\r\nGrüße aus Köln".encode() % len("Grüße aus Köln".encode()) in line


def test_partial_of_a_part(mailbox):
    line = _fetch(mailbox, 3, b"BODY.PEEK[1.2.2]<4.4>")
    assert line == b"* 3 FETCH (UID 3 BODY[1.2.2]<4> {4}\r\nRw0K)"
