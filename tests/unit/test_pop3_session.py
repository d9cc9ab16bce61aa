"""POP3 handlers and state logic without sockets: GIVEN a session with scripted functions,
WHEN a command line is executed, THEN the reply and the state are as RFC 1939 says."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from typing import Any

import pytest

from gateway.functions import TemporaryFailure
from gateway.pop3.maildrop import Maildrop
from gateway.pop3.replies import NoSuchMessage, Reply
from gateway.pop3.session import AUTHORIZATION, COMMANDS, TRANSACTION, UPDATE, Session, State
from gateway.pop3.settings import Pop3Settings

USER = "bob@example.org"
MESSAGES = [b"Subject: one\r\n\r\nbody one\r\n", b"Subject: two\r\n\r\n.dot\r\n", b"Subject: three\r\n\r\nx\r\n"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Functions:
    """Scripted functions: records each request, answers like the real ones."""

    calls: list[tuple[str, Any]] = field(default_factory=list)
    password: str = "secret"
    lock_error: str | None = None
    failing: set[str] = field(default_factory=set)

    async def call(self, function: str, request: Any) -> dict[str, Any]:
        self.calls.append((function, request))
        if request.op in self.failing:
            raise TemporaryFailure(function, "scripted outage")
        if request.op == "authenticate":
            ok = request.username.lower() == USER and request.password == self.password
            return {"ok": True, "user": USER} if ok else {"ok": False, "error": "AUTHENTICATIONFAILED"}
        if request.op == "lock":
            return {"ok": False, "error": self.lock_error} if self.lock_error else {"ok": True, "expires_at": 1}
        if request.op == "select":
            records = [{"uid": 10 + i, "size": len(m), "sha256": sha(m), "flags": []} for i, m in enumerate(MESSAGES)]
            page = [r for r in records if r["uid"] > request.after_uid][: request.limit or len(records)]
            more = bool(page) and page[-1]["uid"] < records[-1]["uid"]
            return {"ok": True, "mailbox": {"name": "INBOX", "uidvalidity": 777}, "messages": page, "more": more}
        if request.op == "remove":
            return {"ok": True, "removed": list(request.uids)}
        return {"ok": True}

    def ops(self) -> list[str]:
        return [request.op for _, request in self.calls]


class Blobs:
    def __init__(self) -> None:
        self.store = {sha(m): m for m in MESSAGES}
        self.prefetched: list[str] = []

    def prefetch(self, sha256: str) -> None:
        self.prefetched.append(sha256)

    def cacheable(self, size: int) -> bool:
        return True

    async def read(self, sha256: str) -> bytes:
        return self.store[sha256]


@dataclass
class Config:
    hostname: str = "pop.example.org"


@dataclass
class Conn:
    functions: Functions
    secure: bool = False
    peer: tuple[str, int] = ("127.0.0.1", 40000)
    config: Config = field(default_factory=Config)
    session_id: str = "s1"
    listener: str = "pop3"
    services: dict[str, Any] = field(default_factory=dict)


def new_session(**conn_args: Any) -> tuple[Session, Functions]:
    functions = Functions()
    conn = Conn(functions, **conn_args)
    session = Session(conn, Pop3Settings(auth_failure_delay=0), Blobs())  # type: ignore[arg-type]
    return session, functions


async def run(session: Session, line: str) -> Reply:
    _, reply = await session.execute(line.encode())
    return session.account(reply)


async def logged_in() -> tuple[Session, Functions]:
    session, functions = new_session()
    await run(session, f"USER {USER}")
    reply = await run(session, "PASS secret")
    assert reply.ok, reply
    session._stop_renewal.set()  # no event loop work left behind
    return session, functions


# -- the command table ---------------------------------------------------------------------


def test_every_command_has_a_handler_and_states():
    assert set(COMMANDS) == {"CAPA", "QUIT", "USER", "PASS", "AUTH", "STLS", "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL"}
    for verb, spec in COMMANDS.items():
        assert spec.states, verb
        assert UPDATE not in spec.states  # RFC 1939 §6: the UPDATE state takes no commands
        assert spec.handler.__name__ == f"cmd_{verb.lower()}"


# -- AUTHORIZATION --------------------------------------------------------------------------


async def test_login_locks_then_lists_the_maildrop():
    # GIVEN a new session WHEN USER/PASS succeed
    session, functions = await logged_in()
    # THEN the credentials were checked, the lease taken, the INBOX listed: in that order
    assert functions.ops() == ["authenticate", "lock", "select"]
    lock = functions.calls[1][1]
    assert (lock.user, lock.owner, lock.seconds) == (USER, "pop.example.org/s1", 300)
    assert session.state is TRANSACTION
    assert (session.maildrop.count, session.maildrop.octets) == (3, sum(map(len, MESSAGES)))


async def test_wrong_password_is_auth_and_bad():
    session, functions = new_session()
    await run(session, f"USER {USER}")
    reply = await run(session, "PASS nope")
    assert reply.status == "-ERR [AUTH] Authentication failed"
    assert session.state is AUTHORIZATION and session.bad_commands == 1
    assert functions.ops() == ["authenticate"]


async def test_in_use_keeps_the_authorization_state():
    # RFC 1939 §4: if the lock is not acquired, -ERR, and the client may try again.
    session, functions = new_session()
    functions.lock_error = "INUSE"
    await run(session, f"USER {USER}")
    reply = await run(session, "PASS secret")
    assert reply.status.startswith("-ERR [IN-USE] ")
    assert not reply.bad and session.state is AUTHORIZATION
    assert session.locked_user is None


async def test_a_large_maildrop_is_listed_page_by_page():
    # GIVEN pages of two summaries (a real maildrop's page is 20,000: each answer far
    # inside a Lambda payload) WHEN the user logs in
    session, functions = new_session()
    session.settings = Pop3Settings(auth_failure_delay=0, listing_page=2)
    await run(session, f"USER {USER}")
    assert (await run(session, "PASS secret")).ok
    # THEN the listing went on after the last UID of each page, and holds every message
    pages = [request for _, request in functions.calls if request.op == "select"]
    assert [(p.after_uid, p.limit, p.readonly) for p in pages] == [(0, 2, True), (11, 2, True)]
    assert [m.uid for m in session.maildrop.messages] == [10, 11, 12]


async def test_listing_failure_releases_the_lease():
    session, functions = new_session()
    functions.failing = {"select"}
    await run(session, f"USER {USER}")
    reply = await run(session, "PASS secret")
    assert reply.status.startswith("-ERR [SYS/TEMP] Temporary failure, try again later (ref ")
    assert functions.ops() == ["authenticate", "lock", "select", "unlock"]
    assert session.locked_user is None and session.state is AUTHORIZATION


async def test_auth_plain_without_initial_response_asks_for_a_continuation():
    session, _ = new_session()
    reply = await run(session, "AUTH PLAIN")
    assert reply.continuation is not None
    final = await reply.continuation(b"AGJvYkBleGFtcGxlLm9yZwBzZWNyZXQ=")  # \0bob@example.org\0secret
    assert final.ok and session.state is TRANSACTION
    session._stop_renewal.set()


async def test_plaintext_is_refused_from_a_remote_insecure_peer():
    session, functions = new_session(peer=("203.0.113.7", 5000))
    reply = await run(session, f"USER {USER}")
    assert reply.status == "-ERR [AUTH] Plaintext authentication disallowed on non-secure connections"
    assert "USER" not in session.capabilities() and "STLS" in session.capabilities()
    assert functions.calls == []


async def test_stls_forgets_user_and_asks_for_tls():
    session, _ = new_session()
    await run(session, f"USER {USER}")
    reply = await run(session, "STLS")
    assert reply.ok and reply.starttls
    assert session.username is None


@pytest.mark.parametrize("line", ["STAT", "LIST", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 1", "UIDL"])
async def test_transaction_commands_in_authorization(line):
    session, functions = new_session()
    reply = await run(session, line)
    assert reply.status == f"-ERR {line.split()[0]} is not valid in the AUTHORIZATION state"
    assert reply.bad and functions.calls == []


# -- TRANSACTION ------------------------------------------------------------------------------


async def test_stat_list_uidl_need_no_function_call():
    session, functions = await logged_in()
    before = len(functions.calls)
    assert (await run(session, "STAT")).status == f"+OK 3 {sum(map(len, MESSAGES))}"
    listing = await run(session, "LIST")
    assert listing.body == b"".join(b"%d %d\r\n" % (n, len(m)) for n, m in enumerate(MESSAGES, 1)) + b".\r\n"
    uidl = await run(session, "UIDL")
    assert uidl.body == b"1 777.10\r\n2 777.11\r\n3 777.12\r\n.\r\n"
    assert (await run(session, "UIDL 2")).status == "+OK 2 777.11"
    assert len(functions.calls) == before


async def test_retr_stuffs_and_marks_retrieved():
    session, _ = await logged_in()
    reply = await run(session, "RETR 2")
    assert reply.status == f"+OK {len(MESSAGES[1])} octets"
    assert reply.body == b"Subject: two\r\n\r\n..dot\r\n.\r\n"
    assert session.maildrop.newly_seen() == [11]


async def test_retr_reads_ahead_the_next_live_messages():
    session, _ = await logged_in()
    session.settings = Pop3Settings(readahead=4)
    await run(session, "DELE 2")
    await run(session, "RETR 1")
    assert session.blobs.prefetched == [sha(MESSAGES[2])]  # not the deleted one, not past the end


async def test_dele_rset_and_quit_remove_only_marked():
    session, functions = await logged_in()
    await run(session, "DELE 1")
    await run(session, "DELE 3")
    assert (await run(session, "STAT")).status == f"+OK 1 {len(MESSAGES[1])}"
    await run(session, "RSET")
    assert (await run(session, "STAT")).status.startswith("+OK 3 ")
    await run(session, "DELE 2")
    reply = await run(session, "QUIT")
    assert reply.status == "+OK pop.example.org POP3 server signing off (2 messages left)"
    assert reply.close and session.state is UPDATE
    removes = [request for _, request in functions.calls if request.op == "remove"]
    assert [r.uids for r in removes] == [[11]]
    assert functions.ops()[-1] == "unlock"


async def test_quit_removes_in_batches(monkeypatch):
    monkeypatch.setattr("gateway.pop3.session.REMOVE_BATCH", 2)
    session, functions = await logged_in()
    for n in (1, 2, 3):
        await run(session, f"DELE {n}")
    reply = await run(session, "QUIT")
    assert reply.status.endswith("(maildrop empty)")
    assert [r.uids for _, r in functions.calls if r.op == "remove"] == [[10, 11], [12]]


async def test_quit_marks_retrieved_messages_seen():
    session, functions = await logged_in()
    await run(session, "RETR 1")
    await run(session, "RETR 2")
    await run(session, "DELE 2")
    await run(session, "QUIT")
    stores = [request for _, request in functions.calls if request.op == "store"]
    assert [(s.uids, s.mode, s.flags) for s in stores] == [([10], "+", ["\\Seen"])]


async def test_quit_with_failing_remove_is_sys_temp():
    # RFC 1939 §6: "-ERR some deleted messages not removed".
    session, functions = await logged_in()
    functions.failing = {"remove"}
    await run(session, "DELE 1")
    reply = await run(session, "QUIT")
    assert reply.status == "-ERR [SYS/TEMP] Some deleted messages not removed"
    assert reply.close and functions.ops()[-1] == "unlock"


async def test_lost_lease_refuses_to_commit():
    session, functions = await logged_in()
    await run(session, "DELE 1")
    session.lease_lost = True
    reply = await run(session, "QUIT")
    assert reply.status.startswith("-ERR [IN-USE] ") and reply.close
    assert "remove" not in functions.ops()


async def test_release_waits_for_a_renewal_in_flight():
    # GIVEN a renewal that is still running when the session ends
    session, functions = await logged_in()
    await session._renewal  # the login's renewal task, already told to stop
    session._stop_renewal.clear()
    order: list[str] = []
    started = asyncio.Event()
    finish = asyncio.Event()
    real_call = functions.call

    async def slow_call(function, request):
        if request.op == "lock":
            started.set()
            await finish.wait()
        order.append(request.op)
        return await real_call(function, request)

    functions.call = slow_call  # type: ignore[method-assign]
    session.settings = Pop3Settings(lease_renew_seconds=0.01)
    session._renewal = asyncio.create_task(session._renew_lease(USER))
    await started.wait()
    # WHEN the session releases its lease meanwhile
    releasing = asyncio.create_task(session._release())
    await asyncio.sleep(0.05)
    finish.set()
    await releasing
    # THEN the unlock comes after the renewal, never before it
    assert order == ["lock", "unlock"]


async def test_bad_command_budget():
    session, _ = new_session()
    session.settings = Pop3Settings(max_bad_commands=3)
    assert not (await run(session, "XYZZY")).close
    assert not (await run(session, "XYZZY")).close
    last = await run(session, "XYZZY")
    assert last.close and last.status == "-ERR Too many bad commands, closing connection"


# -- the maildrop ---------------------------------------------------------------------------


def test_maildrop_numbers_and_marks():
    listing = {"mailbox": {"uidvalidity": 5}, "messages": [{"uid": 9, "size": 3, "sha256": "a"}, {"uid": 4, "size": 7, "sha256": "b", "flags": ["\\Seen"]}]}
    maildrop = Maildrop.from_listing(USER, listing)
    assert [(m.number, m.uid) for m in maildrop.messages] == [(1, 4), (2, 9)]  # UID order
    assert (maildrop.count, maildrop.octets) == (2, 10)
    maildrop.delete(1)
    assert (maildrop.count, maildrop.octets) == (1, 3)
    with pytest.raises(NoSuchMessage, match="already deleted"):
        maildrop.get(1)
    for number in (0, 3):
        with pytest.raises(NoSuchMessage, match="No such message"):
            maildrop.get(number)
    assert maildrop.marked() == [4]
    maildrop.reset()
    assert (maildrop.count, maildrop.octets, maildrop.marked()) == (2, 10, [])
    assert maildrop.unique_id(maildrop.get(2)) == "5.9"


def test_state_names_are_the_rfcs():
    assert [s.value for s in State] == ["AUTHORIZATION", "TRANSACTION", "UPDATE"]
