"""Two sessions on one mailbox see each other's changes (RFC 3501 §5.2, §7.4.1), IDLE
(RFC 2177) sees mail delivered by another path within seconds, the poller batches, and
a user never reaches another user's mailboxes (DESIGN.md contract 6)."""

from __future__ import annotations

import base64
import re
import secrets
import time

from mailcore.accounting import count_requests
from mailcore.contracts import Deliver

from tests.integration.conftest import new_user
from tests.integration.test_imap_support import PASSWORD, Raw, deliver, login_raw, message

pytest_plugins = ["tests.integration.test_imap_support"]


def _session(gw, user: str, mailbox: bytes = b"INBOX") -> Raw:
    client = Raw.open(gw)
    login_raw(client, user)
    assert client.command(b"s", b"SELECT " + mailbox)[-1].startswith(b"s OK")
    return client


def _noop_until(client: Raw, wanted: bytes, seconds: float = 5.0) -> list[bytes]:
    deadline = time.monotonic() + seconds
    seen: list[bytes] = []
    while time.monotonic() < deadline:
        seen += client.command(b"n", b"NOOP")
        if any(wanted in line for line in seen):
            return seen
    raise AssertionError(f"{wanted!r} not seen in {seen!r}")


def test_new_mail_flag_changes_and_expunges_reach_the_other_session(imap_gateway, store, function_transport, user):
    deliver(store, function_transport, user, message("one"))
    a, b = _session(imap_gateway, user), _session(imap_gateway, user)
    # WHEN A appends THEN B learns of it at NOOP (RFC 3501 §6.1.2, §7.3.1 EXISTS)
    a.command(b"ap", b"APPEND INBOX {%d+}\r\n%s" % (len(message("two")), message("two")))
    assert b"* 2 EXISTS" in _noop_until(b, b"EXISTS")
    # WHEN A sets a flag THEN B gets an untagged FETCH (RFC 3501 §7.4.2)
    a.command(b"st", b"STORE 1 +FLAGS (\\Flagged)")
    lines = _noop_until(b, b"FETCH")
    assert any(re.match(rb"\* 1 FETCH \(FLAGS \(.*\\Flagged", line) for line in lines)
    # WHEN A expunges THEN B sees EXPUNGE at NOOP and renumbers
    a.command(b"d", b"STORE 1 +FLAGS.SILENT (\\Deleted)")
    a.command(b"e", b"EXPUNGE")
    assert b"* 1 EXPUNGE" in _noop_until(b, b"EXPUNGE")
    assert b.command(b"f", b"FETCH 1 (UID)")[0] == b"* 1 FETCH (UID 2)"
    a.close()
    b.close()


def test_no_expunge_during_fetch_store_search(imap_gateway, store, function_transport, user):
    # RFC 3501 §7.4.1: EXPUNGE waits for a command that may renumber
    for n in range(3):
        deliver(store, function_transport, user, message(f"m{n}"))
    a, b = _session(imap_gateway, user), _session(imap_gateway, user)
    a.command(b"d", b"STORE 2 +FLAGS.SILENT (\\Deleted)")
    a.command(b"e", b"EXPUNGE")
    time.sleep(0.6)  # the poller has seen it
    for command in (b"FETCH 1:3 (UID)", b"STORE 3 +FLAGS (\\Seen)", b"SEARCH ALL"):
        reply = b.command(b"x", command)
        assert not any(b"EXPUNGE" in line for line in reply), reply
    # the message keeps its number until then: FETCH 3 is still valid
    assert b.command(b"f", b"FETCH 3 (UID)")[0] == b"* 3 FETCH (UID 3)"
    # and a UID command may carry it (RFC 3501 §6.4.8)
    reply = b.command(b"u", b"UID FETCH 1 (FLAGS)")
    assert b"* 2 EXPUNGE" in reply
    a.close()
    b.close()


def test_idle_sees_delivery_by_another_path(imap_gateway, store, function_transport, user):
    client = _session(imap_gateway, user)
    client.send(b"i IDLE\r\n")
    assert client.line() == b"+ idling"
    started = time.monotonic()
    # GIVEN a delivery by the path SMTP takes (staging object, IngestFunction deliver)
    key = f"staging/idle-{secrets.token_hex(6)}"
    store.blobs.s3.put_object(Bucket=store.blobs.bucket, Key=key, Body=message("pushed"))
    result = function_transport.invoke("IngestFunction", Deliver(key, "sender@example.org", [user]).to_event())
    assert result["ok"], result
    lines = []
    while not any(b"EXISTS" in line for line in lines):
        lines.append(client.line())
    assert time.monotonic() - started < 5  # within a few seconds
    assert b"* 1 EXISTS" in lines
    client.send(b"DONE\r\n")
    assert client.until_tagged(b"i")[-1] == b"i OK IDLE terminated"
    client.close()


def test_idle_in_authenticated_state_and_bad_done(raw, user):
    login_raw(raw, user)
    raw.send(b"i IDLE\r\n")
    assert raw.line() == b"+ idling"
    raw.send(b"NOPE\r\n")
    assert raw.until_tagged(b"i")[-1].startswith(b"i BAD")


def test_idle_polling_is_one_call_per_gateway(imap_gateway, store, function_transport, domain):
    # GIVEN eight sessions idling on eight users' INBOXes
    users = [new_user(store, domain) for _ in range(8)]
    sessions = []
    for u in users:
        client = _session(imap_gateway, u)
        client.send(b"i IDLE\r\n")
        assert client.line() == b"+ idling"
        sessions.append(client)
    watcher = imap_gateway.gateway.services["imap.shared"].watcher
    # WHEN a second passes
    calls = watcher.stats.calls
    with count_requests() as counter:
        time.sleep(1.0)
    # THEN each poll is one function call (one BatchGetItem), not one per session
    polls = watcher.stats.calls - calls
    assert 1 <= polls <= 6
    assert counter.counts.get("dynamodb.BatchGetItem", 0) <= polls
    assert counter.total <= polls  # nothing else: no per-session queries while idle
    for client in sessions:
        client.send(b"DONE\r\n")
        client.until_tagged(b"i")
        client.close()


def test_copy_into_selected_mailbox_reports_exists(imap_gateway, store, function_transport, user):
    deliver(store, function_transport, user, message())
    client = _session(imap_gateway, user)
    reply = client.command(b"c", b"COPY 1 INBOX")
    assert b"* 2 EXISTS" in reply and reply[-1].startswith(b"c OK [COPYUID")
    client.close()


def test_deleted_mailbox_ends_the_other_session(imap_gateway, user):
    a = Raw.open(imap_gateway)
    login_raw(a, user)
    a.command(b"c", b"CREATE Doomed")
    b = _session(imap_gateway, user, b"Doomed")
    a.command(b"d", b"DELETE Doomed")
    lines = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            lines += b.command(b"n", b"NOOP")
        except ConnectionError:
            break
        if any(line.startswith(b"* BYE") for line in lines):
            break
    assert any(line.startswith(b"* BYE") for line in lines)
    a.close()
    b.close()


# -- isolation ---------------------------------------------------------------------------


def test_a_user_never_reaches_another_users_mailboxes(imap_gateway, store, function_transport, domain):
    # GIVEN alice with a private folder and mail, and mallory
    alice, mallory = new_user(store, domain), new_user(store, domain)
    deliver(store, function_transport, alice, message("secret", "for alice only\r\n"))
    client = Raw.open(imap_gateway)
    login_raw(client, alice)
    client.command(b"c", b"CREATE Private")
    client.close()
    client = Raw.open(imap_gateway)
    login_raw(client, mallory)
    # THEN mallory's LIST shows only mallory's mailboxes
    listing = client.command(b"l", b'LIST "" *')
    assert not any(b"Private" in line for line in listing)
    # selecting "her" INBOX selects mallory's own, which is empty
    assert b"* 0 EXISTS" in client.command(b"s", b"SELECT INBOX")
    # naming alice's folder or address gets NONEXISTENT, never her data
    for name in (b"Private", b'"' + alice.encode() + b'/INBOX"', b"../" + alice.encode().split(b"@")[0], b'"USER#' + alice.encode() + b'"'):
        reply = client.command(b"x", b"SELECT " + name)
        assert reply[-1].startswith(b"x NO") and not any(b"EXISTS" in line for line in reply[:-1] if b"0 EXISTS" not in line)
        assert client.command(b"t", b"STATUS " + name + b" (MESSAGES)")[-1].startswith(b"t NO")
    client.command(b"s2", b"SELECT INBOX")
    assert client.command(b"se", b"SEARCH TEXT alice")[:-1] == [b"* SEARCH"]
    assert client.command(b"f", b"UID FETCH 1:* (BODY.PEEK[])")[:-1] == []
    # and an authorization identity other than one's own is refused
    token = base64.b64encode(alice.encode() + b"\0" + mallory.encode() + b"\0" + PASSWORD.encode())
    other = Raw.open(imap_gateway)
    assert other.command(b"a", b"AUTHENTICATE PLAIN " + token)[-1].startswith(b"a NO")
    other.close()
    client.close()
