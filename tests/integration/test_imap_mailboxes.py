"""IMAP conversations on mailboxes: RFC 3501 §6.3 (SELECT ... APPEND), RFC 5258 and
RFC 6154 LIST, RFC 3348 CHILDREN, RFC 5819 LIST-STATUS, RFC 4315 APPENDUID, RFC 2342
NAMESPACE, modified UTF-7 names (RFC 3501 §5.1.3)."""

from __future__ import annotations

import imaplib
import re
import time

import pytest
from imapclient import IMAPClient

from tests.integration.test_imap_support import PASSWORD, deliver, login_raw, message

pytest_plugins = ["tests.integration.test_imap_support"]


def _list(client: imaplib.IMAP4, *args: str) -> dict[str, bytes]:
    typ, data = client.list(*args)
    assert typ == "OK"
    out = {}
    for line in data:
        if line is None:
            continue
        m = re.match(rb'\((.*?)\) "/" (.*)', line)
        assert m, line
        out[m.group(2).strip(b'"').decode()] = m.group(1)
    return out


def test_select_reports_the_mailbox(imap, store, function_transport, user):
    # GIVEN two messages in INBOX, one seen
    deliver(store, function_transport, user, message("one"), flags=["\\Seen"])
    deliver(store, function_transport, user, message("two"))
    # WHEN SELECT INBOX
    typ, data = imap.select("INBOX")
    # THEN RFC 3501 §6.3.1: FLAGS, EXISTS, RECENT, UNSEEN, UIDVALIDITY, UIDNEXT, READ-WRITE
    assert typ == "OK" and data == [b"2"]
    responses = imap.untagged_responses
    assert responses["RECENT"] == [b"2"]  # RFC 3501 §2.3.2: first session to see them
    assert responses["UNSEEN"] == [b"2"]
    assert responses["UIDNEXT"] == [b"3"]
    assert int(responses["UIDVALIDITY"][0]) > 0
    assert b"\\Seen" in responses["FLAGS"][0]
    assert responses["HIGHESTMODSEQ"]  # RFC 7162 §3.1.2.1
    assert responses["READ-WRITE"] == [b""]


def test_select_in_pages(imap_gateway, store, function_transport, user):
    from dataclasses import replace

    from tests.integration.test_imap_support import TEST_SETTINGS, connect

    for n in range(5):
        deliver(store, function_transport, user, message(f"m{n}"), flags=["\\Seen"] if n == 3 else [])
    services = imap_gateway.gateway.services
    services["imap"] = replace(TEST_SETTINGS, select_page=2)
    services.pop("imap.shared", None)
    try:
        client = connect(imap_gateway)
        client.login(user, PASSWORD)
        assert client.select("INBOX")[1] == [b"5"]
        assert client.untagged_responses["RECENT"] == [b"5"]
        assert client.search(None, "SEEN") == ("OK", [b"4"])
        client.logout()
    finally:
        services["imap"] = TEST_SETTINGS
        services.pop("imap.shared", None)


def test_recent_is_claimed_once(imap_gateway, imap, store, function_transport, user):
    from tests.integration.test_imap_support import connect

    deliver(store, function_transport, user, message())
    imap.select("INBOX")
    assert imap.untagged_responses["RECENT"] == [b"1"]
    other = connect(imap_gateway)
    other.login(user, PASSWORD)
    other.select("INBOX")
    assert other.untagged_responses["RECENT"] == [b"0"]
    other.logout()


def test_examine_is_read_only(imap, store, function_transport, user):
    deliver(store, function_transport, user, message())
    typ, _data = imap.select("INBOX", readonly=True)
    assert typ == "OK"
    assert imap.untagged_responses.get("READ-ONLY") == [b""]
    # RFC 3501 §6.3.2: no \Seen from fetching bodies, no STORE
    imap.fetch("1", "(BODY[])")
    assert b"\\Seen" not in imap.fetch("1", "(FLAGS)")[1][0]
    typ, _ = imap.store("1", "+FLAGS", "\\Flagged")
    assert typ == "NO"


def test_select_missing_mailbox_is_nonexistent_and_leaves_no_selection(imap):
    imap.select("INBOX")
    typ, data = imap.select("Nope")
    assert typ == "NO" and data[0].startswith(b"[NONEXISTENT]")
    # RFC 3501 §6.3.1: a failed SELECT leaves the authenticated state
    with pytest.raises(imaplib.IMAP4.error):
        imap.fetch("1", "FLAGS")


def test_inbox_is_case_insensitive(imap):
    assert imap.select("inbox")[0] == "OK"  # RFC 3501 §5.1


def test_create_list_rename_delete(imap):
    assert imap.create("Projects/2024/Q1")[0] == "OK"  # RFC 3501 §6.3.3: superiors too
    listed = _list(imap)
    assert {"Projects", "Projects/2024", "Projects/2024/Q1"} <= set(listed)
    assert b"\\HasChildren" in listed["Projects"] and b"\\HasNoChildren" in listed["Projects/2024/Q1"]
    assert imap.rename("Projects", "Work")[0] == "OK"  # RFC 3501 §6.3.5: inferiors move along
    listed = _list(imap)
    assert "Work/2024/Q1" in listed and "Projects" not in listed
    assert imap.delete("Work/2024/Q1")[0] == "OK"
    assert "Work/2024/Q1" not in _list(imap)


def test_create_existing_is_alreadyexists(imap):
    typ, data = imap.create("Sent")
    assert typ == "NO" and data[0].startswith(b"[ALREADYEXISTS]")
    typ, data = imap.create("INBOX")
    assert typ == "NO" and data[0].startswith(b"[ALREADYEXISTS]")


def test_create_with_trailing_delimiter(imap):
    assert imap.create("Folder/")[0] == "OK"
    assert "Folder" in _list(imap)


def test_create_invalid_names(imap):
    assert imap.create('"bad*name"')[0] == "NO"
    assert imap.create('"a//b"')[0] == "NO"


def test_delete_and_rename_errors(imap):
    typ, data = imap.delete("Nope")
    assert typ == "NO" and data[0].startswith(b"[NONEXISTENT]")
    typ, data = imap.delete("INBOX")
    assert typ == "NO"  # RFC 3501 §6.3.4
    typ, data = imap.rename("Nope", "Other")
    assert typ == "NO" and data[0].startswith(b"[NONEXISTENT]")
    typ, data = imap.rename("Sent", "Drafts")
    assert typ == "NO" and data[0].startswith(b"[ALREADYEXISTS]")
    typ, data = imap.rename("Sent", "INBOX")
    assert typ == "NO"


def test_rename_inbox_moves_its_messages(imap, store, function_transport, user):
    # RFC 3501 §6.3.5: INBOX's messages move; an empty INBOX stays
    deliver(store, function_transport, user, message())
    assert imap.rename("INBOX", "Old")[0] == "OK"
    assert imap.select("Old")[1] == [b"1"]
    assert imap.select("INBOX")[1] == [b"0"]


def test_delete_parent_keeps_it_as_noselect(imap):
    imap.create("Parent/Child")
    assert imap.delete("Parent")[0] == "OK"
    listed = _list(imap)
    assert b"\\Noselect" in listed["Parent"] and "Parent/Child" in listed


def test_list_wildcards(imap):
    imap.create("A/B/C")
    names = set(_list(imap, "\"\"", "%"))
    assert "A" in names and "A/B" not in names  # RFC 3501 §6.3.8: % stops at the delimiter
    assert set(_list(imap, "\"\"", "A/*")) == {"A/B", "A/B/C"}
    assert set(_list(imap, "A/", "%")) == {"A/B"}  # the reference is prefixed
    assert set(_list(imap, "\"\"", "inbox")) == {"INBOX"}


def test_list_empty_pattern_gives_the_delimiter(imap):
    _typ, data = imap.list("\"\"", '""')
    assert data == [b'(\\Noselect) "/" ""']


def test_list_special_use(imap):
    listed = _list(imap)
    # RFC 6154 §2
    assert b"\\Sent" in listed["Sent"] and b"\\Trash" in listed["Trash"] and b"\\Junk" in listed["Junk"]
    assert b"\\Drafts" in listed["Drafts"] and b"\\Archive" in listed["Archive"]
    # RFC 6154 §3 with RFC 5258 LIST-EXTENDED selection
    _typ, _data = imap._simple_command("LIST", "(SPECIAL-USE)", '""', "*")
    names = {line.split(b'"/" ')[1].strip(b'"') for line in imap.untagged_responses.pop("LIST")}
    assert names == {b"Sent", b"Drafts", b"Trash", b"Junk", b"Archive"}


def test_list_extended_return_status(imap, store, function_transport, user):
    deliver(store, function_transport, user, message())
    typ, _ = imap._simple_command("LIST", '""', "INBOX", "RETURN", "(CHILDREN STATUS (MESSAGES UNSEEN))")
    assert typ == "OK"
    assert imap.untagged_responses.pop("STATUS") == [b'"INBOX" (MESSAGES 1 UNSEEN 1)']


def test_subscribe_unsubscribe_lsub(imap):
    imap.create("Lists/one")
    imap.create("Lists/two")
    assert imap.unsubscribe("Lists/two")[0] == "OK"
    typ, data = imap.lsub("\"\"", "Lists/*")
    assert [d for d in data if d] == [b'() "/" "Lists/one"']
    typ, data = imap.unsubscribe("Nope")
    assert typ == "NO" and data[0].startswith(b"[NONEXISTENT]")
    assert imap.subscribe("Lists/two")[0] == "OK"
    assert len([d for d in imap.lsub("\"\"", "Lists/*")[1] if d]) == 2


def test_list_subscribed_selection(imap):
    imap.create("S/keep")
    imap.create("S/drop")
    imap.unsubscribe("S/drop")
    _typ, _ = imap._simple_command("LIST", "(SUBSCRIBED)", '""', "S/*")
    lines = imap.untagged_responses.pop("LIST")
    assert lines == [b'(\\HasNoChildren \\Subscribed) "/" "S/keep"']


def test_modified_utf7_names(imap):
    # RFC 3501 §5.1.3: "Entwürfe" is "Entw&APw-rfe" on the wire
    assert imap.create("Entw&APw-rfe")[0] == "OK"
    assert "Entw&APw-rfe" in _list(imap)
    assert imap.select("Entw&APw-rfe")[0] == "OK"
    assert imap.create('"&Jjo!"')[0] == "NO"  # not valid modified UTF-7


def test_imapclient_decodes_utf7_folder_names(imap_gateway, user):
    host, port = imap_gateway.address("imap")
    with IMAPClient(host, port=port, ssl=False, timeout=15) as client:
        client.login(user, PASSWORD)
        client.create_folder("Büro & Co")
        names = [f[2] for f in client.list_folders()]
        assert "Büro & Co" in names
        assert client.select_folder("Büro & Co")[b"EXISTS"] == 0


def test_status(imap, store, function_transport, user):
    deliver(store, function_transport, user, message(), flags=["\\Seen"])
    deliver(store, function_transport, user, message())
    typ, data = imap.status("INBOX", "(MESSAGES UNSEEN UIDNEXT UIDVALIDITY RECENT HIGHESTMODSEQ)")
    assert typ == "OK"
    text = data[0].decode()
    assert "MESSAGES 2" in text and "UNSEEN 1" in text and "UIDNEXT 3" in text and "HIGHESTMODSEQ" in text
    typ, data = imap.status("Nope", "(MESSAGES)")
    assert typ == "NO" and data[0].startswith(b"[NONEXISTENT]")


def test_status_recent_counts_what_no_session_has_seen(imap_gateway, imap, store, function_transport, user):
    from mailcore.accounting import count_requests

    from tests.integration.test_imap_support import connect

    # GIVEN two new messages WHEN STATUS asks for RECENT THEN both are (RFC 3501 §6.3.10)
    deliver(store, function_transport, user, message())
    deliver(store, function_transport, user, message())
    with count_requests() as counter:
        typ, data = imap.status("INBOX", "(RECENT MESSAGES)")
    assert (typ, data) == ("OK", [b'"INBOX" (RECENT 2 MESSAGES 2)'])
    assert counter.snapshot() == {"dynamodb.GetItem": 1, "dynamodb.Query": 1}  # the count
    with count_requests() as counter:
        assert imap.status("INBOX", "(MESSAGES)")[1] == [b'"INBOX" (MESSAGES 2)']
    assert counter.snapshot() == {"dynamodb.GetItem": 1}  # no RECENT, no count
    # AND once a session selected the mailbox, none is; a third arrives and is
    other = connect(imap_gateway)
    other.login(user, PASSWORD)
    other.select("INBOX")
    deliver(store, function_transport, user, message())
    assert imap.status("INBOX", "(RECENT)")[1] == [b'"INBOX" (RECENT 1)']
    other.logout()


def test_rename_keeps_the_recent_mark(imap):
    imap.create("Before")
    imap.append("Before", None, None, message("one"))
    imap.select("Before")
    assert imap.untagged_responses["RECENT"] == [b"1"]
    imap.close()
    assert imap.rename("Before", "After")[0] == "OK"
    # RFC 3501 §2.3.2: the message was seen as \Recent by a session; a rename does not
    # make it new again
    assert imap.status("After", "(RECENT MESSAGES)")[1] == [b'"After" (RECENT 0 MESSAGES 1)']
    imap.select("After")
    assert imap.untagged_responses["RECENT"] == [b"0"]


def test_append_with_flags_and_date(imap):
    raw = message("appended")
    typ, data = imap.append("Drafts", "(\\Draft \\Seen $Label)", imaplib.Time2Internaldate(time.mktime((2020, 5, 17, 10, 0, 0, 0, 0, -1))), raw)
    # RFC 4315 §3 APPENDUID uidvalidity uid
    assert typ == "OK" and re.match(rb"\[APPENDUID \d+ 1\]", data[0])
    imap.select("Drafts")
    typ, data = imap.fetch("1", "(FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])")
    header = data[0][0]
    assert b"\\Draft" in header and b"$Label" in header and b"\\Seen" in header
    assert b"May-2020" in header
    assert b"RFC822.SIZE %d" % len(raw) in header
    assert data[0][1] == raw


def test_append_to_missing_mailbox_is_trycreate(imap):
    typ, data = imap.append("Nope", None, None, message())
    assert typ == "NO" and data[0].startswith(b"[TRYCREATE]")  # RFC 3501 §6.3.11


def test_append_to_selected_mailbox_reports_exists(imap):
    imap.select("INBOX")
    imap.append("INBOX", None, None, message())
    assert imap.untagged_responses.get("EXISTS") == [b"0", b"1"]


def test_append_with_non_synchronizing_literal(raw, user):
    login_raw(raw, user)
    body = message("literal+")
    reply = raw.command(b"a", b"APPEND INBOX (\\Seen) {%d+}\r\n%s" % (len(body), body))
    assert reply[-1].startswith(b"a OK [APPENDUID")


def test_append_too_large_is_refused_before_reading(raw, user):
    login_raw(raw, user)
    # RFC 7889 §4: NO [TOOBIG] without a continuation; the session goes on
    reply = raw.command(b"a", b"APPEND INBOX {999999999999}")
    assert reply[-1].startswith(b"a NO [TOOBIG]")
    assert raw.command(b"b", b"NOOP")[-1].startswith(b"b OK")


def test_append_large_message_streams_to_s3(imap):
    # Larger than one S3 part (5 MiB): the staging upload is multipart.
    body = ("x" * 998 + "\r\n") * 6000
    raw = message("big", body)
    typ, data = imap.append("INBOX", None, None, raw)
    assert typ == "OK"
    imap.select("INBOX")
    typ, data = imap.fetch("1", "(RFC822.SIZE BODY.PEEK[])")
    assert data[0][1] == raw


def test_namespace(imap):
    _typ, data = imap.namespace()
    assert data == [b'(("" "/")) NIL NIL']
