"""Mailbox names: modified UTF-7 (RFC 3501 §5.1.3) and LIST patterns (RFC 3501 §6.3.8)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.imap import utf7
from gateway.imap.names import decode_name, pattern_regex, tree
from gateway.imap.responses import No, compact, ordered_set, string


@pytest.mark.parametrize(
    ("name", "wire"),
    [
        ("INBOX", b"INBOX"),
        ("Entwürfe", b"Entw&APw-rfe"),
        ("A & B", b"A &- B"),
        ("日本語", b"&ZeVnLIqe-"),  # RFC 3501 §5.1.3 example
        ("~peter/mail/台北/日本語", b"~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
        ("😀", b"&2D3eAA-"),  # a surrogate pair
    ],
)
def test_utf7(name, wire):
    assert utf7.encode(name) == wire
    assert utf7.decode(wire) == name


@pytest.mark.parametrize("wire", [b"&Jjo!", b"&", b"a&b", b"&AGE-", b"&U,BTF2XlZyyKng-x&-"[:5]])
def test_invalid_utf7(wire):
    with pytest.raises(utf7.InvalidName):
        utf7.decode(wire)


def test_eight_bit_names_are_utf8():
    assert utf7.decode("Büro".encode()) == "Büro"


@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=30))
def test_utf7_round_trip(name):
    assert utf7.decode(utf7.encode(name)) == name


def test_decode_name_folds_inbox_and_refuses_controls():
    assert decode_name(b"inbox/Sub") == "INBOX/Sub"  # RFC 3501 §5.1
    assert decode_name(b"Inboxes") == "Inboxes"
    with pytest.raises(No):
        decode_name(b"a\x01b")


@pytest.mark.parametrize(
    ("reference", "pattern", "name", "matches"),
    [
        ("", "*", "a/b/c", True),
        ("", "%", "a/b", False),
        ("", "a/%", "a/b", True),
        ("", "a/%", "a/b/c", False),
        ("a/", "%", "a/b", True),
        ("", "inbox", "INBOX", True),
        ("", "x.y", "xzy", False),
    ],
)
def test_patterns(reference, pattern, name, matches):
    assert bool(pattern_regex(reference, pattern).fullmatch(name)) == matches


def test_tree_adds_noselect_parents():
    entries = tree([{"name": "a/b/c", "subscribed": True}, {"name": "x", "subscribed": False}])
    assert not entries["a"].exists and entries["a"].children and entries["a/b"].subscribed_children
    assert entries["a/b/c"].exists and not entries["a/b/c"].children


def test_strings_and_sets():
    assert string(b'a"b\\') == b'"a\\"b\\\\"'
    assert string("Grüße") == b"{7}\r\nGr\xc3\xbc\xc3\x9fe"  # RFC 3501 §4.3: 8-bit needs a literal
    assert compact([5, 1, 2, 3, 7, 8]) == "1:3,5,7:8"
    assert ordered_set([3, 4, 1]) == "3:4,1"
