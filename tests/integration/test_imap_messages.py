"""IMAP conversations on messages: RFC 3501 §6.4 (CHECK ... UID), RFC 4315 UIDPLUS,
RFC 6851 MOVE, RFC 3691 UNSELECT, RFC 7162 CONDSTORE, RFC 4731 ESEARCH."""

from __future__ import annotations

import imaplib
import re

import pytest
from imapclient import IMAPClient

from tests.integration.test_imap_support import PASSWORD, deliver, login_raw, message

pytest_plugins = ["tests.integration.test_imap_support"]


def _three(store, function_transport, user: str) -> str:
    deliver(store, function_transport, user, message("first", "alpha body\r\n", sender="ann@example.org"), flags=["\\Seen"], internaldate=1_600_000_000)
    deliver(store, function_transport, user, message("second", "beta body\r\n", to="zed@example.net"), flags=["\\Flagged"], internaldate=1_650_000_000)
    deliver(store, function_transport, user, message("third", "gamma body " + "x" * 3000 + "\r\n"), internaldate=1_700_000_000)
    return user


@pytest.fixture
def three(store, function_transport, user):
    """INBOX with three messages: 1 seen, 2 flagged, 3 plain."""
    return _three(store, function_transport, user)


@pytest.fixture(scope="module")
def searchable(module_store, function_transport, module_user, gateway):
    """One session on ``three``'s messages, shared by the SEARCH table (searches change
    nothing)."""
    from tests.integration.test_imap_support import TEST_SETTINGS, connect

    _three(module_store, function_transport, module_user)
    gateway.gateway.services["imap"] = TEST_SETTINGS
    client = connect(gateway)
    client.login(module_user, PASSWORD)
    client.select("INBOX")
    yield client
    client.logout()


def _flags(client: imaplib.IMAP4, which: str = "1:*") -> dict[int, set[str]]:
    _typ, data = client.fetch(which, "(FLAGS)")
    out = {}
    for line in data:
        m = re.match(rb"(\d+) \(FLAGS \((.*?)\)", line)
        assert m, line
        out[int(m.group(1))] = set(m.group(2).decode().split())
    return out


# -- FETCH ------------------------------------------------------------------------------


def test_fetch_flags_uid_size_internaldate(imap, three):
    imap.select("INBOX")
    typ, data = imap.fetch("1:*", "(UID FLAGS RFC822.SIZE INTERNALDATE)")
    assert typ == "OK" and len(data) == 3
    assert re.match(rb'1 \(UID 1 FLAGS \(\\Seen \\Recent\) RFC822.SIZE \d+ INTERNALDATE "13-Sep-2020 12:26:40 \+0000"\)', data[0])


def test_fetch_macros(imap, three):
    imap.select("INBOX")
    _, data = imap.fetch("2", "FAST")
    assert b"FLAGS" in data[0] and b"INTERNALDATE" in data[0] and b"RFC822.SIZE" in data[0]
    _, data = imap.fetch("2", "ALL")
    assert b"ENVELOPE (" in data[0]
    _typ, data = imap.fetch("2", "FULL")
    assert b"BODY (" in data[0]


def test_fetch_body_sets_seen_and_peek_does_not(imap, three):
    imap.select("INBOX")
    imap.fetch("3", "(BODY.PEEK[])")
    assert "\\Seen" not in _flags(imap, "3")[3]
    _typ, data = imap.fetch("3", "(BODY[TEXT])")
    # RFC 3501 §6.4.5: \Seen is set, and FLAGS come along
    assert b"\\Seen" in data[0][0] or any(b"\\Seen" in (d if isinstance(d, bytes) else d[0]) for d in data)
    assert "\\Seen" in _flags(imap, "3")[3]


def test_fetch_rfc822_forms(imap, three):
    imap.select("INBOX")
    _, data = imap.fetch("2", "(RFC822.HEADER)")
    assert data[0][1].startswith(b"From: Alice") and data[0][1].endswith(b"\r\n\r\n")
    _, data = imap.fetch("2", "(RFC822.TEXT)")
    assert data[0][1] == b"beta body\r\n"
    _typ, data = imap.fetch("2", "(RFC822)")
    assert data[0][1].endswith(b"beta body\r\n")


def test_fetch_sections_and_partial(imap, three):
    imap.select("INBOX")
    _, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)] BODY.PEEK[1] BODY.PEEK[]<0.10>)")
    parts = [d for d in data if isinstance(d, tuple)]
    assert parts[0][0].endswith(b"BODY[HEADER.FIELDS (SUBJECT FROM)] {51}") or b"HEADER.FIELDS" in parts[0][0]
    assert parts[0][1] == b"From: Alice <ann@example.org>\r\nSubject: first\r\n\r\n"
    assert parts[1][1] == b"alpha body\r\n"
    assert b"BODY[]<0> {10}" in parts[2][0] and parts[2][1] == b"From: Alic"
    _, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT FROM DATE MESSAGE-ID)])")
    assert data[0][1] == b"To: Bob <bob@example.org>\r\n\r\n"
    _typ, data = imap.fetch("1", "(BODY.PEEK[7])")
    assert b"BODY[7] NIL" in data[0]


def test_fetch_out_of_range_is_bad(imap, three):
    imap.select("INBOX")
    with pytest.raises(imaplib.IMAP4.error, match="Invalid message sequence number"):
        imap.fetch("4", "FLAGS")


def test_uid_fetch_ignores_missing_uids_and_includes_uid(imap, three):
    imap.select("INBOX")
    _, data = imap.uid("FETCH", "2:99", "(FLAGS)")
    assert [re.match(rb"\d+ \(UID (\d+)", d).group(1) for d in data] == [b"2", b"3"]
    # RFC 3501 §6.4.8: 100:* includes the last message even beyond it
    _typ, data = imap.uid("FETCH", "100:*", "(FLAGS)")
    assert len(data) == 1 and b"UID 3" in data[0]


def test_fetch_empty_mailbox_star(imap):
    imap.select("INBOX")
    typ, data = imap.fetch("1:*", "(FLAGS)")
    assert typ == "OK" and data == [None]


def test_fetch_envelope_and_bodystructure_with_imapclient(imap_gateway, store, function_transport, user):
    raw = message("structured", "--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--\r\n",
                  extra="MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n")
    deliver(store, function_transport, user, raw)
    host, port = imap_gateway.address("imap")
    with IMAPClient(host, port=port, ssl=False, timeout=15) as client:
        client.login(user, PASSWORD)
        client.select_folder("INBOX")
        data = client.fetch([1], ["ENVELOPE", "BODYSTRUCTURE"])[1]
        envelope = data[b"ENVELOPE"]
        assert envelope.subject == b"structured" and envelope.from_[0].mailbox == b"alice"
        assert data[b"BODYSTRUCTURE"].is_multipart


# -- STORE ------------------------------------------------------------------------------


def test_store_modes(imap, three):
    imap.select("INBOX")
    typ, data = imap.store("3", "+FLAGS", "(\\Answered $Work)")
    assert typ == "OK" and b"\\Answered" in data[0] and b"$Work" in data[0]
    imap.store("3", "-FLAGS", "(\\Answered)")
    assert _flags(imap, "3")[3] == {"$Work", "\\Recent"}
    imap.store("3", "FLAGS", "(\\Draft)")
    assert _flags(imap, "3")[3] == {"\\Draft", "\\Recent"}
    typ, data = imap.store("1:2", "+FLAGS.SILENT", "(\\Deleted)")
    assert typ == "OK" and data == [None]  # RFC 3501 §6.4.6: .SILENT answers no FETCH
    assert all("\\Deleted" in f for n, f in _flags(imap, "1:2").items())


def test_store_new_keyword_announces_flags(imap, three):
    imap.select("INBOX")
    imap.store("1", "+FLAGS", "($NewOne)")
    assert any(b"$NewOne" in f for f in imap.untagged_responses.get("FLAGS", []))  # RFC 3501 §7.2.6


def test_store_recent_is_bad(imap, three):
    imap.select("INBOX")
    with pytest.raises(imaplib.IMAP4.error):
        imap.store("1", "+FLAGS", "(\\Recent)")


def test_store_invalid_flag_is_clientbug(imap, three):
    imap.select("INBOX")
    typ, data = imap.store("1", "+FLAGS", "(\\Bogus)")
    assert typ == "NO" and data[0].startswith(b"[CLIENTBUG]")  # RFC 5530


def test_uid_store(imap, three):
    imap.select("INBOX")
    _typ, data = imap.uid("STORE", "2", "+FLAGS", "(\\Seen)")
    assert b"UID 2" in data[0] and b"\\Seen" in data[0]


# -- COPY, MOVE, EXPUNGE ---------------------------------------------------------------------


def test_copy_with_copyuid(imap, three):
    imap.select("INBOX")
    typ, data = imap.copy("1:2", "Archive")
    # RFC 4315 §3: COPYUID uidvalidity source-set destination-set
    assert typ == "OK" and re.match(rb"\[COPYUID \d+ 1:2 1:2\]", data[0])
    assert imap.select("Archive")[1] == [b"2"]


def test_copy_to_missing_mailbox_is_trycreate(imap, three):
    imap.select("INBOX")
    typ, data = imap.copy("1", "Nope")
    assert typ == "NO" and data[0].startswith(b"[TRYCREATE]")  # RFC 3501 §6.4.7


def test_move(raw, three):
    login_raw(raw, three)
    raw.command(b"s", b"SELECT INBOX")
    reply = raw.command(b"m", b"MOVE 2 Trash")
    # RFC 6851 §4.3: COPYUID in an untagged OK, then EXPUNGE, then the tagged OK
    assert reply[0].startswith(b"* OK [COPYUID ") and reply[1] == b"* 2 EXPUNGE" and reply[-1].startswith(b"m OK")
    reply = raw.command(b"u", b"UID MOVE 3 Trash")
    assert reply[1] == b"* 2 EXPUNGE"
    assert raw.command(b"t", b"STATUS Trash (MESSAGES)")[0] == b'* STATUS "Trash" (MESSAGES 2)'


def test_expunge(raw, three):
    login_raw(raw, three)
    raw.command(b"s", b"SELECT INBOX")
    raw.command(b"d", b"STORE 1,3 +FLAGS.SILENT (\\Deleted)")
    reply = raw.command(b"e", b"EXPUNGE")
    # RFC 3501 §7.4.1: each EXPUNGE renumbers; highest first keeps numbers valid
    assert reply == [b"* 3 EXPUNGE", b"* 1 EXPUNGE", b"e OK EXPUNGE completed"]
    assert raw.command(b"f", b"FETCH 1 (UID)")[0] == b"* 1 FETCH (UID 2)"


def test_uid_expunge_only_given_uids(raw, three):
    # RFC 4315 §2.1
    login_raw(raw, three)
    raw.command(b"s", b"SELECT INBOX")
    raw.command(b"d", b"STORE 1:3 +FLAGS.SILENT (\\Deleted)")
    assert raw.command(b"e", b"UID EXPUNGE 2")[:-1] == [b"* 2 EXPUNGE"]
    assert raw.command(b"f", b"FETCH 1:* (UID)")[:-1] == [b"* 1 FETCH (UID 1)", b"* 2 FETCH (UID 3)"]


def test_close_expunges_silently_and_unselect_does_not(raw, three):
    login_raw(raw, three)
    raw.command(b"s", b"SELECT INBOX")
    raw.command(b"d", b"STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert raw.command(b"u", b"UNSELECT") == [b"u OK UNSELECT completed"]  # RFC 3691
    assert raw.command(b"f", b"FETCH 1 FLAGS")[-1].startswith(b"f BAD")
    raw.command(b"s2", b"SELECT INBOX")
    assert raw.command(b"c", b"CLOSE") == [b"c OK CLOSE completed"]  # RFC 3501 §6.4.2: no EXPUNGE
    assert raw.command(b"t", b"STATUS INBOX (MESSAGES)")[0] == b'* STATUS "INBOX" (MESSAGES 2)'


def test_check(imap, three):
    imap.select("INBOX")
    assert imap.check()[0] == "OK"


# -- SEARCH -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        pytest.param("ALL", "1 2 3", id="all"),
        pytest.param("SEEN", "1", id="seen"),
        pytest.param("UNSEEN", "2 3", id="unseen"),
        pytest.param("FLAGGED", "2", id="flagged"),
        pytest.param("NOT FLAGGED", "1 3", id="not"),
        pytest.param("OR SEEN FLAGGED", "1 2", id="or"),
        pytest.param("(SEEN) (UNFLAGGED)", "1", id="parens"),
        pytest.param("2:3", "2 3", id="sequence-set"),
        pytest.param("UID 1,3", "1 3", id="uid"),
        pytest.param("LARGER 1000", "3", id="larger"),
        pytest.param("SMALLER 1000", "1 2", id="smaller"),
        pytest.param("SINCE 1-Jan-2022", "2 3", id="since"),
        pytest.param("BEFORE 1-Jan-2022", "1", id="before"),
        pytest.param("ON 13-Sep-2020", "1", id="on"),
        pytest.param("SENTON 7-Feb-1994", "1 2 3", id="senton"),
        pytest.param("SENTBEFORE 1-Jan-1990", "", id="sentbefore"),
        pytest.param('FROM "ann@"', "1", id="from"),
        pytest.param("TO zed", "2", id="to"),
        pytest.param("SUBJECT SECOND", "2", id="subject-case-insensitive"),
        pytest.param("BODY gamma", "3", id="body"),
        pytest.param("TEXT beta", "2", id="text-body"),
        pytest.param("TEXT third", "3", id="text-header"),
        pytest.param('HEADER Message-ID "example.org"', "1 2 3", id="header"),
        pytest.param('HEADER X-Missing ""', "", id="header-absent"),
        pytest.param("NEW", "2 3", id="new"),
        pytest.param("RECENT", "1 2 3", id="recent"),
        pytest.param("OLD", "", id="old"),
        pytest.param("KEYWORD $Nope", "", id="keyword"),
        pytest.param("UNKEYWORD $Nope", "1 2 3", id="unkeyword"),
        pytest.param("CHARSET UTF-8 SUBJECT first", "1", id="charset"),
        pytest.param("DELETED", "", id="deleted"),
        pytest.param("UNDELETED UNANSWERED UNDRAFT", "1 2 3", id="undeleted"),
        pytest.param("5:*", "3", id="star-beyond"),
    ],
)
def test_search_keys(searchable, criteria, expected):
    # RFC 3501 §6.4.4: every key
    typ, data = searchable.search(None, criteria)
    assert typ == "OK" and data == [expected.encode()]


def test_search_unknown_charset_is_badcharset(imap, three):
    imap.select("INBOX")
    typ, data = imap.search("X-UNKNOWN", "ALL")
    assert typ == "NO" and data[0].startswith(b"[BADCHARSET")


def test_search_literal_utf8(raw, store, function_transport, user):
    deliver(store, function_transport, user, message("Grüße aus Köln"))
    login_raw(raw, user)
    raw.command(b"s", b"SELECT INBOX")
    word = "Köln".encode()
    raw.send(b"a SEARCH CHARSET UTF-8 SUBJECT {%d}\r\n" % len(word))
    assert raw.line().startswith(b"+")
    raw.send(word + b"\r\n")
    assert raw.until_tagged(b"a")[0] == b"* SEARCH 1"


def test_uid_search(imap, three):
    imap.select("INBOX")
    assert imap.uid("SEARCH", None, "UNSEEN") == ("OK", [b"2 3"])


def test_esearch(raw, three):
    # RFC 4731 §3.1
    login_raw(raw, three)
    raw.command(b"s", b"SELECT INBOX")
    reply = raw.command(b"a", b"SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN")
    assert reply[0] == b'* ESEARCH (TAG "a") MIN 2 MAX 3 COUNT 2 ALL 2:3'
    reply = raw.command(b"b", b"UID SEARCH RETURN () ALL")
    assert reply[0] == b'* ESEARCH (TAG "b") UID ALL 1:3'
    reply = raw.command(b"c", b"SEARCH RETURN (COUNT MIN) DELETED")
    assert reply[0] == b'* ESEARCH (TAG "c") COUNT 0'


def test_search_modseq(raw, three):
    # RFC 7162 §3.1.5: (MODSEQ n) with the highest MODSEQ of the matches
    login_raw(raw, three)
    raw.command(b"s", b"SELECT INBOX")
    reply = raw.command(b"a", b"SEARCH MODSEQ 1")
    assert re.fullmatch(rb"\* SEARCH 1 2 3 \(MODSEQ \d+\)", reply[0])


# -- CONDSTORE ---------------------------------------------------------------------------


def test_condstore_fetch_changedsince(raw, three):
    login_raw(raw, three)
    reply = raw.command(b"s", b"SELECT INBOX (CONDSTORE)")
    highest = int(next(re.search(rb"HIGHESTMODSEQ (\d+)", line).group(1) for line in reply if b"HIGHESTMODSEQ" in line))
    raw.command(b"st", b"STORE 2 +FLAGS.SILENT (\\Answered)")
    # RFC 7162 §3.1.4.1: only what changed since, with MODSEQ
    reply = raw.command(b"f", b"FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % highest)
    assert len(reply) == 2 and reply[0].startswith(b"* 2 FETCH (FLAGS (\\Answered \\Flagged \\Recent) MODSEQ (")


def test_condstore_unchangedsince_conflict(raw, three):
    login_raw(raw, three)
    raw.command(b"s", b"SELECT INBOX (CONDSTORE)")
    reply = raw.command(b"a", b"STORE 1:3 (UNCHANGEDSINCE 1) +FLAGS (\\Answered)")
    # every message changed after MODSEQ 1: all fail, RFC 7162 §3.1.3
    assert reply[-1] == b"a OK [MODIFIED 1:3] STORE completed"
    reply = raw.command(b"b", b"UID STORE 2 (UNCHANGEDSINCE 999999) +FLAGS.SILENT (\\Answered)")
    assert re.fullmatch(rb"\* 2 FETCH \(UID 2 MODSEQ \(\d+\)\)", reply[0])


def test_status_highestmodseq_grows(imap, three):
    first = imap.status("INBOX", "(HIGHESTMODSEQ)")[1][0]
    imap.select("INBOX")
    imap.store("1", "+FLAGS", "(\\Answered)")
    second = imap.status("INBOX", "(HIGHESTMODSEQ)")[1][0]
    assert int(re.search(rb"(\d+)\)", second).group(1)) > int(re.search(rb"(\d+)\)", first).group(1))


def test_imapclient_full_flow(imap_gateway, three):
    host, port = imap_gateway.address("imap")
    with IMAPClient(host, port=port, ssl=False, timeout=15) as client:
        client.login(three, PASSWORD)
        info = client.select_folder("INBOX")
        assert info[b"EXISTS"] == 3
        assert client.search(["UNSEEN"]) == [2, 3]
        client.add_flags([2], [b"\\Seen"])
        assert client.get_flags([2])[2] == (b"\\Flagged", b"\\Seen", b"\\Recent") or b"\\Seen" in client.get_flags([2])[2]
        client.move([3], "Archive")
        assert client.search() == [1, 2]
        client.delete_messages([1])
        client.expunge()
        assert client.search() == [2]
        client.unselect_folder()
