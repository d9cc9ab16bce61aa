"""POP3 conversations against the running gateway, with stdlib ``poplib`` where it fits and
a raw socket where the exact bytes matter (RFC 1939, RFC 2449, RFC 5034).

Mail is delivered through the real path (``mailcore.delivery.deliver`` of a staged
object); what IMAP would see is checked in the mailbox index itself (``store.messages``).
"""

from __future__ import annotations

import base64
import logging
import poplib
import secrets
import socket
import time
from collections.abc import Iterator

import pytest
from mailcore.contracts import Deliver
from mailcore.delivery import deliver
from mailcore.locks import lock_key
from mailcore.mailboxes import INBOX
from mailcore.store import Store

from gateway.blobs import BlobReader
from gateway.functions import TemporaryFailure
from gateway.pop3.settings import Pop3Settings

PASSWORD = "correct horse"
#: A message whose lines start with dots in every way that matters to stuffing (RFC 1939 §3).
DOTTED = (
    b"From: Alice <alice@example.org>\r\n"
    b"Subject: dots\r\n"
    b"\r\n"
    b".\r\n"
    b"..\r\n"
    b". leading dot and space\r\n"
    b".hidden\r\n"
    b"middle . dot\r\n"
    b"\r\n"
    b"...\r\n"
    b"last line\r\n"
)


def message(n: int, body_lines: int = 3) -> bytes:
    body = b"".join(b"line %d of message %d\r\n" % (i, n) for i in range(body_lines))
    return b"From: a@example.org\r\nSubject: message %d\r\nMessage-ID: <m%d.%s@example.org>\r\n\r\n%s" % (
        n, n, secrets.token_hex(4).encode(), body,
    )


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def pop3_settings(gateway, monkeypatch) -> Pop3Settings:
    """Fast failure delays for tests; everything else as in production."""
    settings = Pop3Settings(auth_failure_delay=0.05)
    monkeypatch.setitem(gateway.gateway.services, "pop3", settings)
    return settings


def use_settings(gateway, monkeypatch, **changes) -> Pop3Settings:
    settings = Pop3Settings(**{"auth_failure_delay": 0.05, **changes})
    monkeypatch.setitem(gateway.gateway.services, "pop3", settings)
    return settings


def deliver_to(store: Store, user: str, raw: bytes) -> int:
    """SMTP's path: stage the bytes, then the ingest operation indexes them in INBOX."""
    key = f"staging/test-{secrets.token_hex(8)}"
    store.blobs.s3.put_object(Bucket=store.blobs.bucket, Key=key, Body=raw)
    result = deliver(store, Deliver(key, "a@example.org", [user]))
    return int(result["deliveries"][0]["uid"])


def inbox_records(store: Store, user: str) -> list:
    """What IMAP would list: the INBOX's index."""
    mailbox = store.mailboxes.get(user, INBOX)
    return store.messages.list_range(mailbox.mailbox_id)


def inbox_uids(store: Store, user: str) -> list[int]:
    return [m.uid for m in inbox_records(store, user)]


@pytest.fixture
def mails(store, user) -> list[bytes]:
    raws = [message(1), DOTTED, message(3, body_lines=10)]
    for raw in raws:
        deliver_to(store, user, raw)
    return raws


@pytest.fixture
def pop(gateway) -> Iterator[poplib.POP3]:
    with connect(gateway) as client:
        yield client


def login(client: poplib.POP3, user: str, password: str = PASSWORD) -> bytes:
    client.user(user)
    return client.pass_(password)


class Client(poplib.POP3):
    """poplib's client as a context manager that closes its socket."""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(gateway, listener: str = "pop3") -> Client:
    host, port = gateway.address(listener)
    return Client(host, port, timeout=10)


class Raw:
    """A POP3 client on a bare socket: sends what it is told, reads exact bytes."""

    def __init__(self, gateway, listener: str = "pop3") -> None:
        self.sock = socket.create_connection(gateway.address(listener), timeout=10)
        self.buffer = b""
        self.greeting = self.line()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            if not self._fill():
                raise EOFError(self.buffer)
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def multiline(self) -> bytes:
        """The body of a multi-line reply as sent (still stuffed), without the terminator."""
        while b"\r\n.\r\n" not in b"\r\n" + self.buffer:
            if not self._fill():
                raise EOFError(self.buffer)
        if self.buffer.startswith(b".\r\n"):
            self.buffer = self.buffer[3:]
            return b""
        body, self.buffer = self.buffer.split(b"\r\n.\r\n", 1)
        return body + b"\r\n"

    def command(self, line: bytes) -> bytes:
        self.send(line + b"\r\n")
        return self.line()

    def closed(self) -> bool:
        """True once the server has closed the connection (and sent nothing more)."""
        try:
            return not self._fill() and True
        except (ConnectionResetError, TimeoutError):
            return False

    def close(self) -> None:
        self.sock.close()


def unstuff(body: bytes) -> bytes:
    """The reverse of RFC 1939 §3 byte-stuffing, written independently of the server's code."""
    lines = body.split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


@pytest.fixture
def raw(gateway) -> Iterator[Raw]:
    client = Raw(gateway)
    yield client
    client.close()


def raw_login(client: Raw, user: str) -> bytes:
    assert client.command(b"USER " + user.encode()).startswith(b"+OK")
    return client.command(b"PASS " + PASSWORD.encode())


# -- AUTHORIZATION state ----------------------------------------------------------------


def test_greeting_is_positive(pop):
    # RFC 1939 §4: the server greets with +OK.
    assert pop.getwelcome().startswith(b"+OK")


def test_capa_before_login_lists_the_extensions(pop):
    # RFC 2449 §5 / §6; RFC 2595 §4 STLS; RFC 5034 §6 SASL.
    caps = pop.capa()
    assert {"TOP", "UIDL", "USER", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "STLS"} <= set(caps)
    assert caps["SASL"] == ["PLAIN"]
    assert caps["EXPIRE"] == ["NEVER"]
    assert caps["IMPLEMENTATION"] == ["serverless-mail"]


def test_capa_lists_the_same_in_the_transaction_state(pop, user):
    # RFC 2449 §5: AUTHORIZATION-state capabilities are announced in both states.
    before = pop.capa()
    login(pop, user)
    assert pop.capa() == before


def test_user_pass_logs_in_and_reports_the_maildrop(pop, user, mails):
    assert pop.user(user).startswith(b"+OK")
    reply = pop.pass_(PASSWORD)
    assert reply.startswith(b"+OK")
    assert f"{len(mails)} messages ({sum(map(len, mails))} octets)".encode() in reply


def test_user_names_are_not_revealed_by_user(pop, domain):
    # RFC 1939 §7 USER: we accept any name; PASS fails without saying which part was wrong.
    assert pop.user(f"nobody@{domain}").startswith(b"+OK")
    with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\] Authentication failed"):
        pop.pass_("whatever")


def test_wrong_password_fails_after_the_delay_and_needs_user_again(gateway, monkeypatch, user):
    # RFC 3206 §4 [AUTH]; the delay slows down guessing.
    use_settings(gateway, monkeypatch, auth_failure_delay=0.4)
    pop = connect(gateway)
    pop.user(user)
    started = time.monotonic()
    with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\]"):
        pop.pass_("wrong password")
    assert time.monotonic() - started >= 0.4
    with pytest.raises(poplib.error_proto, match="USER first"):
        pop.pass_(PASSWORD)
    assert login(pop, user).startswith(b"+OK")
    pop.quit()


def test_pass_keeps_spaces_in_the_password(pop, store, domain):
    # RFC 1939 §7 PASS: the argument may contain spaces.
    address = store.add_user(f"spaces{secrets.token_hex(3)}@{domain}", " two  spaces ")
    assert login(pop, address, " two  spaces ").startswith(b"+OK")


def test_pass_without_user_is_refused(pop):
    with pytest.raises(poplib.error_proto, match="USER first"):
        pop.pass_(PASSWORD)


def test_quit_in_authorization_state_says_goodbye(pop):
    # RFC 1939 §4 QUIT: no UPDATE state.
    assert pop.quit().startswith(b"+OK")


def plain(*parts: str) -> str:
    return base64.b64encode("\0".join(parts).encode()).decode()


def test_auth_plain_with_initial_response(raw, user, mails):
    # RFC 5034 §4 with an initial response (RFC 4616 message).
    reply = raw.command(b"AUTH PLAIN " + plain("", user, PASSWORD).encode())
    assert reply.startswith(b"+OK")
    assert raw.command(b"STAT") == f"+OK {len(mails)} {sum(map(len, mails))}".encode()


def test_auth_plain_with_continuation(raw, user):
    # RFC 5034 §4: no initial response -> "+ " and the client's response on a line.
    assert raw.command(b"AUTH PLAIN") == b"+ "
    assert raw.command(plain(user, user, PASSWORD).encode()).startswith(b"+OK")


def test_auth_plain_cancelled_with_star(raw, user):
    # RFC 5034 §4: "*" cancels; the server answers -ERR and the session goes on.
    assert raw.command(b"AUTH PLAIN") == b"+ "
    assert raw.command(b"*").startswith(b"-ERR")
    assert raw_login(raw, user).startswith(b"+OK")


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        pytest.param(lambda u: plain("", u, "wrong"), b"-ERR [AUTH] ", id="wrong-password"),
        pytest.param(lambda u: plain("someone@else.example", u, PASSWORD), b"-ERR [AUTH] ", id="other-authzid"),
        pytest.param(lambda u: "not base64!", b"-ERR ", id="bad-base64"),
        pytest.param(lambda u: base64.b64encode(b"no-nuls").decode(), b"-ERR ", id="not-plain"),
        pytest.param(lambda u: "=", b"-ERR ", id="empty"),
    ],
)
def test_auth_plain_refusals(raw, user, response, expected):
    assert raw.command(b"AUTH PLAIN " + response(user).encode()).startswith(expected)
    assert raw_login(raw, user).startswith(b"+OK")


def test_auth_without_mechanism_lists_plain(raw):
    # Deviation from RFC 5034: the legacy listing (as Dovecot does).
    assert raw.command(b"AUTH").startswith(b"+OK")
    assert raw.multiline() == b"PLAIN\r\n"


def test_auth_with_unknown_mechanism_is_refused(raw):
    assert raw.command(b"AUTH CRAM-MD5").startswith(b"-ERR")


@pytest.mark.parametrize(
    "command",
    ["STAT", "LIST", "LIST 1", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 0", "UIDL", "UIDL 1"],
)
def test_transaction_commands_are_refused_before_login(raw, user, mails, command):
    # RFC 1939 §3: each command is valid in its states only; the session goes on.
    assert raw.command(command.encode()) == f"-ERR {command.split()[0]} is not valid in the AUTHORIZATION state".encode()
    assert raw_login(raw, user).startswith(b"+OK")


@pytest.mark.parametrize("command", ["USER x@example.org", "PASS x", "AUTH PLAIN", "STLS"])
def test_authorization_commands_are_refused_after_login(raw, user, mails, command):
    raw_login(raw, user)
    assert raw.command(command.encode()).startswith(b"-ERR")
    assert raw.command(b"STAT").startswith(b"+OK 3 ")


# -- TRANSACTION state ------------------------------------------------------------------


def test_stat_list_uidl(pop, user, mails):
    # RFC 1939 §5 STAT, LIST; §7 UIDL.
    login(pop, user)
    assert pop.stat() == (3, sum(map(len, mails)))
    _resp, listing, _ = pop.list()
    assert listing == [f"{n} {len(m)}".encode() for n, m in enumerate(mails, 1)]
    assert pop.list(2) == f"+OK 2 {len(mails[1])}".encode()
    _, uids, _ = pop.uidl()
    assert [u.split()[0] for u in uids] == [b"1", b"2", b"3"]
    assert len({u.split()[1] for u in uids}) == 3
    assert all(0 < len(u.split()[1]) <= 70 for u in uids)  # RFC 1939 §7: 1-70 characters
    assert pop.uidl(3) == b"+OK " + uids[2]


def test_retr_returns_each_message(pop, user, mails):
    login(pop, user)
    for n, raw in enumerate(mails, 1):
        resp, lines, _octets = pop.retr(n)
        assert resp == f"+OK {len(raw)} octets".encode()
        assert b"\r\n".join(lines) + b"\r\n" == raw  # poplib unstuffs


def test_retr_is_byte_exact_with_dotted_lines(raw, user, mails):
    # RFC 1939 §3: lines starting with "." are stuffed on the wire, and only those.
    raw_login(raw, user)
    assert raw.command(b"RETR 2") == f"+OK {len(DOTTED)} octets".encode()
    body = raw.multiline()
    assert body.count(b"\r\n.") == DOTTED.count(b"\r\n.")
    assert b"\r\n..\r\n" in body and b"\r\n...\r\n" in body  # "." and ".." stuffed
    assert unstuff(body) == DOTTED


@pytest.mark.parametrize(
    ("lines", "expected_body_lines"),
    [(0, []), (2, [b".", b".."]), (4, [b".", b"..", b". leading dot and space", b".hidden"]), (100, None)],
    ids=["none", "two", "four", "more-than-there-are"],
)
def test_top_sends_the_header_and_n_body_lines(raw, user, mails, lines, expected_body_lines):
    # RFC 1939 §7 TOP msg n.
    raw_login(raw, user)
    assert raw.command(f"TOP 2 {lines}".encode()).startswith(b"+OK")
    got = unstuff(raw.multiline())
    header, _, _body = DOTTED.partition(b"\r\n\r\n")
    if expected_body_lines is None:
        assert got == DOTTED
    else:
        assert got == header + b"\r\n\r\n" + b"".join(line + b"\r\n" for line in expected_body_lines)


def test_dele_marks_and_hides_the_message(pop, user, mails):
    # RFC 1939 §5 DELE: marked messages may not be referred to; STAT and LIST leave them out.
    login(pop, user)
    assert pop.dele(2).startswith(b"+OK")
    assert pop.stat() == (2, len(mails[0]) + len(mails[2]))
    assert [line.split()[0] for line in pop.list()[1]] == [b"1", b"3"]
    assert [line.split()[0] for line in pop.uidl()[1]] == [b"1", b"3"]
    for attempt in (lambda: pop.retr(2), lambda: pop.dele(2), lambda: pop.list(2), lambda: pop.top(2, 0), lambda: pop.uidl(2)):
        with pytest.raises(poplib.error_proto, match="already deleted"):
            attempt()


def test_noop(pop, user, mails):
    login(pop, user)
    assert pop.noop().startswith(b"+OK")


def test_message_numbers_are_fixed_for_the_session(pop, store, user, mails):
    # RFC 1939 §5: new mail during the session does not change the numbering.
    login(pop, user)
    deliver_to(store, user, message(99))
    assert pop.stat()[0] == 3
    with pytest.raises(poplib.error_proto, match="No such message"):
        pop.retr(4)


@pytest.mark.parametrize(
    "command",
    [
        pytest.param("RETR x", id="retr-not-a-number"),
        pytest.param("RETR -1", id="retr-negative"),
        pytest.param("RETR 0", id="retr-zero"),
        pytest.param("RETR 4", id="retr-out-of-range"),
        pytest.param("RETR 99999999999", id="retr-huge"),
        pytest.param("RETR", id="retr-missing"),
        pytest.param("DELE 1.5", id="dele-fraction"),
        pytest.param("LIST abc", id="list-not-a-number"),
        pytest.param("TOP 1", id="top-missing-lines"),
        pytest.param("TOP 1 x", id="top-lines-not-a-number"),
        pytest.param("TOP 1 -3", id="top-negative-lines"),
        pytest.param("UIDL 1 2", id="uidl-two-args"),
        pytest.param("STAT 1", id="stat-with-arg"),
        pytest.param("XYZZY", id="unknown-command"),
        pytest.param("RETR\x001", id="control-character"),
    ],
)
def test_bad_arguments_get_err_and_the_session_goes_on(raw, user, mails, command):
    raw_login(raw, user)
    assert raw.command(command.encode()).startswith(b"-ERR")
    assert raw.command(b"STAT").startswith(b"+OK 3 ")


def test_commands_are_case_insensitive(raw, user, mails):
    # RFC 1939 §3: keywords are case-insensitive.
    assert raw.command(b"user " + user.encode()).startswith(b"+OK")
    assert raw.command(b"pAsS " + PASSWORD.encode()).startswith(b"+OK")
    assert raw.command(b"stat").startswith(b"+OK 3 ")


# -- pipelining (RFC 2449 §6.6) ----------------------------------------------------------


def test_pipelined_commands_are_answered_in_order(raw, user, mails):
    raw.send(
        b"USER " + user.encode() + b"\r\nPASS " + PASSWORD.encode() + b"\r\n"
        b"STAT\r\nLIST\r\nUIDL 1\r\nRETR 2\r\nTOP 1 0\r\nBOGUS\r\nDELE 3\r\nNOOP\r\nRSET\r\nSTAT\r\n"
    )
    assert raw.line().startswith(b"+OK")  # USER
    assert raw.line().startswith(b"+OK Logged in")  # PASS
    assert raw.line() == f"+OK 3 {sum(map(len, mails))}".encode()  # STAT
    assert raw.line().startswith(b"+OK 3 messages")  # LIST
    assert raw.multiline().count(b"\r\n") == 3
    assert raw.line().startswith(b"+OK 1 ")  # UIDL 1
    assert raw.line() == f"+OK {len(DOTTED)} octets".encode()  # RETR 2
    assert unstuff(raw.multiline()) == DOTTED
    assert raw.line().startswith(b"+OK")  # TOP 1 0
    assert unstuff(raw.multiline()) == mails[0].partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
    assert raw.line().startswith(b"-ERR")  # BOGUS
    assert raw.line().startswith(b"+OK")  # DELE 3
    assert raw.line() == b"+OK"  # NOOP
    assert raw.line().startswith(b"+OK")  # RSET
    assert raw.line() == f"+OK 3 {sum(map(len, mails))}".encode()  # STAT


# -- UPDATE state and deletion (RFC 1939 §6) -------------------------------------------------


def test_dele_then_quit_removes_from_the_maildrop_and_from_imap(gateway, store, user, mails):
    before = inbox_uids(store, user)
    with connect(gateway) as pop:
        login(pop, user)
        pop.dele(1)
        pop.dele(3)
        assert pop.quit() == b"+OK mx.test.example POP3 server signing off (1 messages left)"
    assert inbox_uids(store, user) == [before[1]]  # IMAP's view
    with connect(gateway) as pop:
        login(pop, user)
        assert pop.stat() == (1, len(mails[1]))
        assert b"\r\n".join(pop.retr(1)[1]) + b"\r\n" == mails[1]
        pop.quit()


def test_dele_then_dropped_connection_removes_nothing(gateway, store, user, mails):
    before = inbox_uids(store, user)
    client = Raw(gateway)
    raw_login(client, user)
    assert client.command(b"DELE 1").startswith(b"+OK")
    client.close()  # no QUIT: no UPDATE state
    with connect_when_unlocked(gateway, user) as pop:
        assert pop.stat()[0] == 3
        pop.quit()
    assert inbox_uids(store, user) == before


def test_dele_then_rset_then_quit_removes_nothing(gateway, store, user, mails):
    before = inbox_uids(store, user)
    with connect(gateway) as pop:
        login(pop, user)
        pop.dele(1)
        pop.dele(2)
        assert pop.rset() == f"+OK Maildrop has 3 messages ({sum(map(len, mails))} octets)".encode()
        assert pop.stat()[0] == 3
        pop.quit()
    assert inbox_uids(store, user) == before


def test_quit_with_everything_deleted_leaves_the_maildrop_empty(gateway, store, user, mails):
    with connect(gateway) as pop:
        login(pop, user)
        for n in (1, 2, 3):
            pop.dele(n)
        assert pop.quit().endswith(b"(maildrop empty)")
    assert inbox_uids(store, user) == []
    mailbox = store.mailboxes.get(user, INBOX)
    assert (mailbox.messages, mailbox.unseen) == (0, 0)


def test_message_expunged_over_imap_is_absent_from_the_next_session(gateway, store, user, mails):
    records = inbox_records(store, user)
    store.messages.remove(user, INBOX, [records[0]])  # what IMAP EXPUNGE does
    with connect(gateway) as pop:
        login(pop, user)
        assert pop.stat() == (2, len(mails[1]) + len(mails[2]))
        assert b"\r\n".join(pop.retr(1)[1]) + b"\r\n" == mails[1]
        pop.quit()


def test_uidl_is_stable_across_sessions_and_imap_activity(gateway, store, user, mails):
    def uidl_map() -> dict[bytes, bytes]:
        with connect(gateway) as pop:
            login(pop, user)
            _, lines, _ = pop.uidl()
            uid_to_message = {line.split()[1]: b"\r\n".join(pop.retr(int(line.split()[0]))[1]) for line in lines}
            pop.quit()
        return uid_to_message

    first = uidl_map()
    # IMAP activity: flag changes, an expunge, new mail.
    records = inbox_records(store, user)
    store.messages.store_flags(user, INBOX, [r.uid for r in records], "+", ["\\Flagged", "\\Seen"])
    store.messages.remove(user, INBOX, [records[1]])
    deliver_to(store, user, message(4))
    second = uidl_map()
    assert {k: v for k, v in first.items() if k in second} == {k: second[k] for k in first if k in second}
    assert len(set(first) & set(second)) == 2
    assert len(second) == 3


def test_retrieved_and_kept_messages_become_seen(gateway, store, user, mails):
    # Like Dovecot: RETR + QUIT sets \Seen on kept messages, so IMAP shows them as read.
    with connect(gateway) as pop:
        login(pop, user)
        pop.retr(1)
        pop.top(2, 0)  # TOP does not count as reading
        pop.quit()
    mailbox = store.mailboxes.get(user, INBOX)
    flags = [("\\Seen" in m.flags) for m in inbox_records(store, user)]
    assert flags == [True, False, False]
    assert mailbox.unseen == 2


# -- exclusive access (RFC 1939 §4, RFC 2449 §8.1.1) -----------------------------------------


def connect_when_unlocked(gateway, user: str, timeout: float = 5.0) -> Client:
    """Log in, waiting for a previous session's release (it happens after its socket closes)."""
    deadline = time.monotonic() + timeout
    while True:
        pop = connect(gateway)
        try:
            login(pop, user)
            return pop
        except poplib.error_proto as error:
            pop.close()
            if b"[IN-USE]" not in error.args[0] or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_second_session_gets_in_use(gateway, user, mails):
    with connect(gateway) as first:
        login(first, user)
        with connect(gateway) as second:
            second.user(user)
            with pytest.raises(poplib.error_proto, match=r"-ERR \[IN-USE\]"):
                second.pass_(PASSWORD)
            # The session stays in AUTHORIZATION and may try again (RFC 1939 §4).
            first.quit()
            assert login(second, user).startswith(b"+OK")
            second.quit()


def test_auth_plain_also_gets_in_use(gateway, user):
    with connect(gateway) as first:
        login(first, user)
        client = Raw(gateway)
        try:
            assert client.command(b"AUTH PLAIN " + plain("", user, PASSWORD).encode()).startswith(b"-ERR [IN-USE]")
        finally:
            client.close()
        first.quit()


def test_lock_is_released_when_the_connection_drops(gateway, user, mails):
    client = Raw(gateway)
    raw_login(client, user)
    client.close()
    with connect_when_unlocked(gateway, user) as pop:
        assert pop.stat()[0] == 3
        pop.quit()


def test_an_expired_lease_of_a_dead_gateway_does_not_lock_out(gateway, store, user, mails):
    # The lease item a crashed gateway left behind, expired a second ago.
    table = store.mailboxes.table
    item = {**lock_key(user), "owner": "dead-gateway/abc", "expires_at": int(time.time()) - 1}
    store.mailboxes.dynamodb.put_item(TableName=table, Item={k: ({"N": str(v)} if isinstance(v, int) else {"S": v}) for k, v in item.items()})
    with connect(gateway) as pop:
        assert login(pop, user).startswith(b"+OK")
        pop.quit()


def test_a_live_lease_of_another_gateway_locks_out(gateway, store, user, mails):
    table = store.mailboxes.table
    item = {**lock_key(user), "owner": "other-gateway/abc", "expires_at": int(time.time()) + 60}
    store.mailboxes.dynamodb.put_item(TableName=table, Item={k: ({"N": str(v)} if isinstance(v, int) else {"S": v}) for k, v in item.items()})
    with connect(gateway) as pop:
        pop.user(user)
        with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
            pop.pass_(PASSWORD)


def test_the_lease_is_renewed_while_the_session_lives(gateway, monkeypatch, store, user, mails):
    use_settings(gateway, monkeypatch, lease_seconds=2, lease_renew_seconds=0.3)
    with connect(gateway) as pop:
        login(pop, user)
        time.sleep(2.5)  # longer than the lease: only renewals keep it
        with connect(gateway) as second:
            second.user(user)
            with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
                second.pass_(PASSWORD)
        assert pop.stat()[0] == 3
        pop.quit()


def test_a_session_that_lost_its_lease_commits_nothing(gateway, monkeypatch, store, user, mails):
    use_settings(gateway, monkeypatch, lease_seconds=60, lease_renew_seconds=0.2)
    before = inbox_uids(store, user)
    client = Raw(gateway)
    raw_login(client, user)
    assert client.command(b"DELE 1").startswith(b"+OK")
    # Another gateway takes the maildrop over (as if our lease had expired unrenewed).
    table = store.mailboxes.table
    item = {**lock_key(user), "owner": "other-gateway/xyz", "expires_at": int(time.time()) + 60}
    store.mailboxes.dynamodb.put_item(TableName=table, Item={k: ({"N": str(v)} if isinstance(v, int) else {"S": v}) for k, v in item.items()})
    time.sleep(0.6)
    assert client.command(b"QUIT").startswith(b"-ERR [IN-USE]")
    client.close()
    assert inbox_uids(store, user) == before


# -- limits (DESIGN.md contract 5) ------------------------------------------------------------


def test_overlong_line_gets_err_and_the_session_goes_on(raw, user, mails):
    # RFC 2449 §4: a command line is at most 255 octets.
    assert raw.command(b"NOOP " + b"x" * 300) == b"-ERR Line too long"
    assert raw.command(b"USER " + b"y" * 248).startswith(b"+OK")  # 253 + CRLF = 255: fine
    assert raw_login(raw, user).startswith(b"+OK")
    assert raw.command(b"STAT").startswith(b"+OK 3 ")


def test_a_huge_line_without_line_end_does_not_hurt(raw, user):
    raw.send(b"A" * 200_000 + b"\r\n")
    assert raw.line() == b"-ERR Line too long"
    assert raw_login(raw, user).startswith(b"+OK")


def test_bad_command_budget_ends_the_session(gateway, monkeypatch):
    use_settings(gateway, monkeypatch, max_bad_commands=5)
    raw = Raw(gateway)
    for _ in range(4):
        assert raw.command(b"BOGUS").startswith(b"-ERR")
    assert raw.command(b"BOGUS") == b"-ERR Too many bad commands, closing connection"
    assert raw.closed()


def test_failed_logins_count_against_the_budget(gateway, monkeypatch, user):
    use_settings(gateway, monkeypatch, max_bad_commands=3)
    raw = Raw(gateway)
    for _ in range(2):
        raw.command(b"USER " + user.encode())
        assert raw.command(b"PASS nope").startswith(b"-ERR [AUTH]")
    raw.command(b"USER " + user.encode())
    assert raw.command(b"PASS nope") == b"-ERR [AUTH] Too many bad commands, closing connection"
    assert raw.closed()


def test_commands_before_login_are_limited(gateway, monkeypatch):
    use_settings(gateway, monkeypatch, max_commands_before_login=4)
    raw = Raw(gateway)
    for _ in range(3):
        assert raw.command(b"CAPA").startswith(b"+OK")
        raw.multiline()
    assert raw.command(b"CAPA").startswith(b"-ERR Too many commands")
    assert raw.closed()


def test_idle_session_is_closed_silently_and_commits_nothing(gateway, monkeypatch, store, user, mails):
    # RFC 1939 §3: the autologout timer closes without entering UPDATE and without a reply.
    use_settings(gateway, monkeypatch, idle_timeout=0.5)
    before = inbox_uids(store, user)
    client = Raw(gateway)
    raw_login(client, user)
    assert client.command(b"DELE 1").startswith(b"+OK")
    time.sleep(0.8)
    assert client.closed()
    assert client.buffer == b""
    client.close()
    with connect_when_unlocked(gateway, user) as pop:
        assert pop.stat()[0] == 3
        pop.quit()
    assert inbox_uids(store, user) == before


# -- server failures -------------------------------------------------------------------------


class FailingTransport:
    """The real transport, except that the named function is down."""

    def __init__(self, inner, failing: str, ops: set[str] | None = None) -> None:
        self.inner, self.failing, self.ops = inner, failing, ops

    def invoke(self, function, event):
        if function == self.failing and (self.ops is None or event.get("op") in self.ops):
            raise TemporaryFailure(function, "test outage")
        return self.inner.invoke(function, event)


def test_auth_function_failure_is_sys_temp(gateway, monkeypatch, raw, user):
    functions = gateway.gateway.functions
    monkeypatch.setattr(functions, "transport", FailingTransport(functions.transport, "AuthFunction"))
    raw.command(b"USER " + user.encode())
    reply = raw.command(b"PASS " + PASSWORD.encode())
    assert reply.startswith(b"-ERR [SYS/TEMP] Temporary failure, try again later (ref ")
    assert b"test outage" not in reply and b"Error" not in reply


def test_maildrop_failure_is_sys_temp_and_releases_the_lock(gateway, monkeypatch, raw, user, mails):
    functions = gateway.gateway.functions
    inner = functions.transport
    monkeypatch.setattr(functions, "transport", FailingTransport(inner, "MailboxFunction", {"select"}))
    assert raw_login(raw, user).startswith(b"-ERR [SYS/TEMP]")
    monkeypatch.setattr(functions, "transport", inner)
    assert raw_login(raw, user).startswith(b"+OK")  # not locked out by its own failed attempt


def test_remove_failure_answers_err_and_removes_nothing_more(gateway, monkeypatch, store, user, mails):
    functions = gateway.gateway.functions
    monkeypatch.setattr(functions, "transport", FailingTransport(functions.transport, "MailboxFunction", {"remove"}))
    client = Raw(gateway)
    raw_login(client, user)
    client.command(b"DELE 1")
    # RFC 1939 §6: "-ERR some deleted messages not removed".
    assert client.command(b"QUIT") == b"-ERR [SYS/TEMP] Some deleted messages not removed"
    assert client.closed()
    client.close()
    assert len(inbox_uids(store, user)) == 3


# -- content streamed from S3 ------------------------------------------------------------------


def test_large_messages_stream_in_chunks_byte_exact(gateway, monkeypatch, store, user):
    # Messages above the cache's item limit are streamed; chunk edges fall inside and next
    # to dotted lines.
    aws = gateway.gateway.services["aws"]
    reader = BlobReader(aws.s3, gateway.gateway.config.mail_bucket, item_limit=100, chunk_size=7)
    monkeypatch.setitem(gateway.gateway.services, "blobs", reader)
    deliver_to(store, user, DOTTED)
    client = Raw(gateway)
    raw_login(client, user)
    assert client.command(b"RETR 1") == f"+OK {len(DOTTED)} octets".encode()
    assert unstuff(client.multiline()) == DOTTED
    assert client.command(b"TOP 1 3").startswith(b"+OK")
    assert unstuff(client.multiline()) == DOTTED[: DOTTED.index(b".hidden")]
    assert reader.stats.streamed == 2 and reader.cached_bytes == 0
    client.command(b"QUIT")
    client.close()


def test_a_message_whose_blob_is_gone_gets_err(gateway, store, user):
    raw_bytes = message(7) + secrets.token_hex(8).encode() + b"\r\n"
    deliver_to(store, user, raw_bytes)
    client = Raw(gateway)
    raw_login(client, user)
    from mailcore.blobstore import sha256_hex

    store.blobs.s3.delete_object(Bucket=store.blobs.bucket, Key=f"blobs/{sha256_hex(raw_bytes)}")
    assert client.command(b"RETR 1") == b"-ERR Message 1 was removed from the maildrop"
    assert client.command(b"NOOP") == b"+OK"
    client.close()


# -- logging -----------------------------------------------------------------------------------


def test_one_log_line_per_command_with_credentials_redacted(gateway, caplog, user, mails):
    caplog.set_level(logging.INFO, logger="gateway.pop3.session")
    client = Raw(gateway)
    raw_login(client, user)
    client.command(b"AUTH PLAIN " + plain("", user, PASSWORD).encode())
    client.command(b"STAT")
    client.command(b"QUIT")
    client.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any("command=QUIT" in r.getMessage() for r in caplog.records):
        time.sleep(0.05)
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.pop3.session"]
    commands = [line for line in lines if " command=" in line]
    assert [line.split(" command=")[1].split()[0] for line in commands] == ["USER", "PASS", "AUTH", "STAT", "QUIT"]
    session_ids = {line.split("session=")[1].split()[0] for line in commands}
    assert len(session_ids) == 1
    text = "\n".join(lines)
    assert PASSWORD not in text and "correct" not in text
    assert plain("", user, PASSWORD) not in text
    assert "arg='***'" in text and "arg='PLAIN ***'" in text


# -- AWS cost (DESIGN.md contract 4) -------------------------------------------------------------


def test_stat_list_uidl_cost_no_aws_request_after_login(gateway, monkeypatch, user, mails):
    from mailcore.accounting import count_requests

    # A cold cache of our own: other tests' sessions filled the shared one with DOTTED.
    aws = gateway.gateway.services["aws"]
    monkeypatch.setitem(gateway.gateway.services, "blobs", BlobReader(aws.s3, gateway.gateway.config.mail_bucket))
    client = Raw(gateway)
    with count_requests() as login_cost:
        raw_login(client, user)
    with count_requests() as listing_cost:
        for command in (b"STAT", b"LIST", b"UIDL", b"LIST 2", b"UIDL 3", b"NOOP"):
            reply = client.command(command)
            assert reply.startswith(b"+OK")
            if command in (b"LIST", b"UIDL"):
                client.multiline()
    with count_requests() as retr_cost:
        for number in (1, 2, 3, 1, 2, 3):
            client.command(b"RETR %d" % number)
            client.multiline()
    client.command(b"QUIT")
    client.close()
    # Authenticate: BatchGetItem (the throttle's counters) + GetItem; LockMaildrop: PutItem;
    # the listing (a read-only SelectMailbox page): GetItem + Query.
    assert login_cost.snapshot() == {
        "dynamodb.BatchGetItem": 1,
        "dynamodb.GetItem": 1,
        "dynamodb.PutItem": 1,
        "dynamodb.Query": 1,
    }
    assert listing_cost.total == 0
    assert retr_cost.snapshot() == {"s3.GetObject": 3}  # one per message (read-ahead included), then cached
