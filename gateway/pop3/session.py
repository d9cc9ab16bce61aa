"""The POP3 session: RFC 1939's states, the command table, and the connection loop.

Handlers are ``async def cmd_<verb>(self, arg) -> Reply``: they return a reply or raise a
:class:`~gateway.pop3.replies.Pop3Error` and never touch the socket, so pipelined
commands (RFC 2449 §6.6) are answered strictly in order by the one loop that writes.
Which command is valid in which state is data (:data:`COMMANDS`); client input only
ever selects an entry of that table.

Costs per session, in function calls: login = Authenticate + LockMaildrop + one read-only
SelectMailbox per 20,000 messages (the maildrop listing answers STAT, LIST and UIDL for
the whole session); RETR and TOP read the blob through the gateway's shared cache (no
call when cached); QUIT = one RemoveMessages per 250 deleted messages, one StoreFlags
when messages became \\Seen, one UnlockMaildrop. The lease is renewed every
``lease_renew_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from mailcore.contracts import (
    LockMaildrop,
    RemoveMessages,
    Request,
    StoreFlags,
    UnlockMaildrop,
)

from gateway.blobs import BlobCorrupt, BlobMissing, BlobReader, BlobUnavailable
from gateway.commandlog import CommandRecord, log_command
from gateway.functions import TemporaryFailure
from gateway.login import authenticate, pause
from gateway.mailbox_pages import select_pages
from gateway.pop3 import grammar
from gateway.pop3.content import TopCutter, stuff_message, stuffed, top
from gateway.pop3.maildrop import Maildrop, Message
from gateway.pop3.replies import (
    AUTH_FAILED,
    BAD_BUDGET,
    GREETING,
    IN_USE,
    LEASE_LOST,
    LINE_TOO_LONG,
    MAILDROP_IN_USE,
    PLAINTEXT_DISALLOWED,
    PRE_LOGIN_BUDGET,
    SIGNING_OFF,
    SYS_TEMP,
    UNKNOWN_COMMAND,
    AuthFailed,
    InUse,
    PermanentError,
    Pop3Error,
    Pop3Syntax,
    Reply,
    TemporaryError,
    WrongState,
    multiline,
    ok,
)
from gateway.pop3.settings import Pop3Settings
from gateway.wire.lines import ConnectionClosed, LineTooLong, TooSlow, read_line

if TYPE_CHECKING:
    from gateway.server import Connection

log = logging.getLogger(__name__)

#: The maildrop is the INBOX that IMAP shows.
INBOX = "INBOX"
#: UIDs per RemoveMessages call in the UPDATE state (keeps each call well inside a
#: Lambda timeout: the function makes one transaction per message).
REMOVE_BATCH = 250
#: RFC 2449 §6.9.
IMPLEMENTATION = "serverless-mail"
#: Above this many unsent octets a write waits for the client (with the idle timeout).
_WRITE_HIGH_WATER = 64 * 1024


class State(enum.Enum):
    """RFC 1939 §3."""

    AUTHORIZATION = "AUTHORIZATION"
    TRANSACTION = "TRANSACTION"
    UPDATE = "UPDATE"


AUTHORIZATION, TRANSACTION, UPDATE = State.AUTHORIZATION, State.TRANSACTION, State.UPDATE


class Session:
    def __init__(self, conn: Connection, settings: Pop3Settings, blobs: BlobReader) -> None:
        self.conn = conn
        self.settings = settings
        self.blobs = blobs
        self.state = AUTHORIZATION
        #: The name a USER command gave, until PASS uses it (RFC 1939 §7).
        self.username: str | None = None
        self._maildrop: Maildrop | None = None
        #: Who holds the lease: this gateway's host name and the session id.
        self.owner = f"{conn.config.hostname}/{conn.session_id}"
        self.locked_user: str | None = None
        self.lease_lost = False
        self._renewal: asyncio.Task[None] | None = None
        self._stop_renewal = asyncio.Event()
        self.bad_commands = 0
        self.commands_before_login = 0
        self.login_by = asyncio.get_running_loop().time() + settings.login_deadline

    @property
    def maildrop(self) -> Maildrop:
        assert self._maildrop is not None, "only TRANSACTION-state commands use the maildrop"
        return self._maildrop

    @property
    def host(self) -> str:
        return self.conn.config.hostname

    # -- AUTHORIZATION state (RFC 1939 §4, §7; RFC 2449 §5; RFC 5034 §4; RFC 2595 §4) ------

    async def cmd_capa(self, arg: str) -> Reply:
        """RFC 2449 §5 CAPA. The same list in both states: what the AUTHORIZATION state
        offers must be announced in both."""
        grammar.parse_no_argument(arg)
        return multiline("Capability list follows", self.capabilities())

    def capabilities(self) -> list[str]:
        caps = ["TOP", "UIDL"]  # RFC 2449 §6.1; RFC 1939 §7
        if self._plaintext_permitted():
            caps += ["USER", "SASL PLAIN"]  # RFC 2449 §6.2, RFC 5034 §6
        if not self.conn.secure:
            caps.append("STLS")  # RFC 2595 §4
        caps += [
            "RESP-CODES",  # RFC 2449 §6.4
            "AUTH-RESP-CODE",  # RFC 3206 §6
            "PIPELINING",  # RFC 2449 §6.6
            "EXPIRE NEVER",  # RFC 2449 §6.7: we never delete mail the client left
            f"IMPLEMENTATION {IMPLEMENTATION}",  # RFC 2449 §6.9
        ]
        return caps

    def _plaintext_permitted(self) -> bool:
        return self.settings.plaintext_permitted(self.conn.secure, self.conn.peer[0])

    def _require_plaintext(self) -> None:
        # RFC 2595 §2.2: credentials in the clear only over TLS (or loopback, by policy).
        if not self._plaintext_permitted():
            raise AuthFailed(PLAINTEXT_DISALLOWED)

    async def cmd_user(self, arg: str) -> Reply:
        """RFC 1939 §7 USER name. Whether the name exists is not told (PASS fails instead)."""
        name = grammar.parse_user(arg)
        self._require_plaintext()
        self.username = name
        return ok("Send your password")

    async def cmd_pass(self, arg: str) -> Reply:
        """RFC 1939 §7 PASS string: the rest of the line, spaces included."""
        if self.username is None:
            raise Pop3Syntax("No user name given, send USER first")
        self._require_plaintext()
        username, self.username = self.username, None  # a failed PASS needs a new USER
        if not arg:
            raise Pop3Syntax("PASS needs a password")
        return await self._login(username, arg)

    async def cmd_auth(self, arg: str) -> Reply:
        """RFC 5034 §4 AUTH mechanism [initial-response]; the one mechanism is PLAIN (RFC 4616)."""
        if not arg.strip(" "):
            # Deviation from RFC 5034 (which defines no bare AUTH): like Dovecot, list the
            # mechanisms, as older clients probe with it (the draft RFC 1734 behaviour).
            return multiline("Supported mechanisms", ["PLAIN"] if self._plaintext_permitted() else [])
        auth = grammar.parse_auth(arg)
        if auth.mechanism != "PLAIN":
            raise Pop3Syntax("Unsupported authentication mechanism")
        self._require_plaintext()
        if auth.initial_response is None:
            return Reply(True, continuation=self._plain_response)  # RFC 5034 §4: "+ " challenge
        return await self._plain(auth.initial_response)

    async def _plain_response(self, line: bytes) -> Reply:
        if line.strip(b" ") == b"*":
            return Reply(False, "Authentication cancelled")  # RFC 5034 §4
        return await self._plain(grammar.parse_base64(line))

    async def _plain(self, message: bytes) -> Reply:
        credentials = grammar.parse_plain(message)
        return await self._login(credentials.authcid, credentials.password, credentials.authzid)

    async def _login(self, username: str, password: str, authzid: str = "") -> Reply:
        """Check the credentials, then lock and list the maildrop (RFC 1939 §4)."""
        try:
            result = await authenticate(self.conn, username, password)
        except TemporaryFailure as failure:
            raise TemporaryError(failure.correlation_id) from None
        principal = result.principal
        # RFC 4616 §2: an authorization identity other than the user's own is refused.
        if not principal or (authzid and authzid.lower() not in {username.lower(), principal.lower()}):
            await pause(self.conn, self.settings.auth_failure_delay, result.delay)
            if result.throttled:  # RFC 3206 §5: a temporary condition, try again later
                return Reply(False, "Too many failed logins, try again later", code=SYS_TEMP, bad=True)
            raise AuthFailed(AUTH_FAILED)
        maildrop = await self._open_maildrop(principal)
        self.state = TRANSACTION
        return ok(f"Logged in, maildrop has {maildrop.count} messages ({maildrop.octets} octets)")

    async def _open_maildrop(self, user: str) -> Maildrop:
        lock = await self._call("MailboxFunction", LockMaildrop(user, self.owner, self.settings.lease_seconds))
        if not lock.get("ok"):
            if lock.get("error") == "INUSE":
                raise InUse(MAILDROP_IN_USE)  # RFC 2449 §8.1.1
            raise PermanentError("Maildrop unavailable")
        self.locked_user = user
        try:
            try:
                maildrop = Maildrop.from_listing(user, await self._listing(user))
            except (KeyError, TypeError, ValueError) as error:
                raise _server_error("maildrop listing outside the contract", error) from None
        except BaseException:
            await self._release()
            raise
        self._maildrop = maildrop
        self._renewal = asyncio.create_task(self._renew_lease(user))
        return maildrop

    async def _listing(self, user: str) -> dict[str, Any]:
        """The INBOX's summaries (UID, size, blob hash, flags), a page per call: each
        answer stays far inside a Lambda payload's 6 MB however large the maildrop
        (DESIGN.md contract 1). Read-only: POP3 claims no IMAP \\Recent (RFC 3501 §2.3.2)."""
        messages: list[dict[str, Any]] = []
        call = functools.partial(self._call, "MailboxFunction")
        async for listing in select_pages(call, user, INBOX, True, self.settings.listing_page):
            if not listing.get("ok"):
                raise PermanentError("Maildrop unavailable")
            messages += listing.get("messages") or []
        return {**listing, "messages": messages}

    async def cmd_stls(self, arg: str) -> Reply:
        """RFC 2595 §4 STLS: only before login and only once."""
        grammar.parse_no_argument(arg)
        if self.conn.secure:
            raise Pop3Syntax("TLS is already active")
        self.username = None  # RFC 2595 §4: forget what the client said before TLS
        return Reply(True, "Begin TLS negotiation now", starttls=True)

    async def cmd_quit(self, arg: str) -> Reply:
        """RFC 1939 §4 QUIT (no UPDATE), §6 QUIT in TRANSACTION (enter UPDATE)."""
        grammar.parse_no_argument(arg)
        if self.state is AUTHORIZATION:
            return Reply(True, SIGNING_OFF.format(host=self.host), close=True)
        self.state = UPDATE
        return await self._update()

    # -- TRANSACTION state (RFC 1939 §5, §7) --------------------------------------------

    async def cmd_stat(self, arg: str) -> Reply:
        """RFC 1939 §5 STAT: "+OK nn mm", messages marked as deleted not counted."""
        grammar.parse_no_argument(arg)
        return ok(f"{self.maildrop.count} {self.maildrop.octets}")

    async def cmd_list(self, arg: str) -> Reply:
        """RFC 1939 §5 LIST [msg]."""
        number = grammar.parse_optional_msg(arg)
        maildrop = self.maildrop
        if number is not None:
            message = maildrop.get(number)
            return ok(f"{message.number} {message.size}")
        lines = [f"{m.number} {m.size}" for m in maildrop.live()]
        return multiline(f"{maildrop.count} messages ({maildrop.octets} octets)", lines)

    async def cmd_uidl(self, arg: str) -> Reply:
        """RFC 1939 §7 UIDL [msg]."""
        number = grammar.parse_optional_msg(arg)
        maildrop = self.maildrop
        if number is not None:
            message = maildrop.get(number)
            return ok(f"{message.number} {maildrop.unique_id(message)}")
        return multiline("Unique-id listing follows", [f"{m.number} {maildrop.unique_id(m)}" for m in maildrop.live()])

    async def cmd_retr(self, arg: str) -> Reply:
        """RFC 1939 §5 RETR msg: the message, dot-stuffed, byte for byte as stored."""
        message = self.maildrop.get(grammar.parse_msg(arg))
        reply = await self._content(message, f"{message.size} octets", None)
        message.retrieved = True
        self._read_ahead(message.number)
        return reply

    def _read_ahead(self, number: int) -> None:
        upcoming = self.maildrop.messages[number : number + self.settings.readahead]
        for message in upcoming:
            if not message.deleted and self.blobs.cacheable(message.size):
                self.blobs.prefetch(message.sha256)

    async def cmd_top(self, arg: str) -> Reply:
        """RFC 1939 §7 TOP msg n: the header, the blank line, and n lines of the body."""
        args = grammar.parse_top(arg)
        message = self.maildrop.get(args.msg)
        return await self._content(message, "Top of message follows", args.lines)

    async def _content(self, message: Message, text: str, lines: int | None) -> Reply:
        try:
            if self.blobs.cacheable(message.size):
                data = await self.blobs.read(message.sha256)
                return Reply(True, text, body=stuff_message(data if lines is None else top(data, lines)))
            chunks = await self.blobs.open(message.sha256, message.size)
        except BlobMissing:
            # Removed by another client (IMAP EXPUNGE) while this session held its number.
            raise Pop3Error(f"Message {message.number} was removed from the maildrop") from None
        except (BlobUnavailable, BlobCorrupt) as error:
            raise _server_error(f"blob {message.sha256} unreadable", error) from None
        cutter = None if lines is None else TopCutter(lines)
        return Reply(True, text, stream=stuffed(chunks, cutter))

    async def cmd_dele(self, arg: str) -> Reply:
        """RFC 1939 §5 DELE msg: marks only; the UPDATE state removes."""
        message = self.maildrop.delete(grammar.parse_msg(arg))
        return ok(f"Message {message.number} deleted")

    async def cmd_noop(self, arg: str) -> Reply:
        """RFC 1939 §5 NOOP."""
        grammar.parse_no_argument(arg)
        return ok()

    async def cmd_rset(self, arg: str) -> Reply:
        """RFC 1939 §5 RSET: unmark every message marked as deleted."""
        grammar.parse_no_argument(arg)
        self.maildrop.reset()
        return ok(f"Maildrop has {self.maildrop.count} messages ({self.maildrop.octets} octets)")

    # -- UPDATE state (RFC 1939 §6) --------------------------------------------------------

    async def _update(self) -> Reply:
        """Remove the marked messages, release the lock, then answer and close. If some
        could not be removed: "-ERR some deleted messages not removed" (RFC 1939 §6)."""
        maildrop = self.maildrop
        marked = maildrop.marked()
        failed = False
        for start in range(0, len(marked), REMOVE_BATCH):
            try:
                result = await self._call("MailboxFunction", RemoveMessages(maildrop.user, INBOX, marked[start : start + REMOVE_BATCH]))
            except TemporaryError:
                failed = True
                break
            if not result.get("ok"):
                log.warning("pop3 session=%s remove refused: %s", self.conn.session_id, result.get("error"))
                failed = True
                break
        seen = maildrop.newly_seen() if self.settings.mark_seen and not failed else []
        if seen:
            # The flags are a courtesy to IMAP; the removal is what QUIT promised.
            with contextlib.suppress(TemporaryError):
                await self._call("MailboxFunction", StoreFlags(maildrop.user, INBOX, seen, "+", ["\\Seen"]))
        await self._release()
        if failed:
            return Reply(False, "Some deleted messages not removed", code=SYS_TEMP, close=True)
        left = f"{maildrop.count} messages left" if maildrop.count else "maildrop empty"
        return Reply(True, f"{SIGNING_OFF.format(host=self.host)} ({left})", close=True)

    # -- the lease (RFC 1939 §4 exclusive-access lock) ----------------------------------------

    async def _renew_lease(self, user: str) -> None:
        while True:
            try:
                async with asyncio.timeout(self.settings.lease_renew_seconds):
                    await self._stop_renewal.wait()
                return  # the session is ending
            except TimeoutError:
                pass
            try:
                request = LockMaildrop(user, self.owner, self.settings.lease_seconds)
                result = await self.conn.functions.call("MailboxFunction", request)
            except TemporaryFailure:
                continue  # the lease outlasts a few missed renewals
            if not result.get("ok") and result.get("error") == "INUSE":
                # Expired and taken by another session: this one may no longer commit.
                self.lease_lost = True
                log.warning("pop3 session=%s lost the lease on %s", self.conn.session_id, user)
                return

    async def _release(self) -> None:
        if self._renewal is not None:
            # Stop renewing, and let a renewal in flight land first: one that landed after
            # the unlock would lock the user out for a whole lease.
            self._stop_renewal.set()
            with contextlib.suppress(Exception):
                await self._renewal
            self._renewal = None
        user, self.locked_user = self.locked_user, None
        if user is None:
            return
        with contextlib.suppress(TemporaryFailure):  # the lease expires by itself
            await self.conn.functions.call("MailboxFunction", UnlockMaildrop(user, self.owner))

    # -- plumbing ------------------------------------------------------------------------

    async def _call(self, function: str, request: Request) -> dict[str, Any]:
        try:
            return await self.conn.functions.call(function, request)
        except TemporaryFailure as failure:
            raise TemporaryError(failure.correlation_id) from None

    async def execute(self, line: bytes) -> tuple[grammar.Command | None, Reply]:
        """One command line -> its reply (dispatch through :data:`COMMANDS`)."""
        try:
            command = grammar.parse_command(line)
        except Pop3Syntax as error:
            return None, error.reply()
        spec = COMMANDS.get(command.verb)
        if spec is None:
            return command, Reply(False, UNKNOWN_COMMAND, bad=True)
        if self.state not in spec.states:
            return command, WrongState(f"{command.verb} is not valid in the {self.state.value} state").reply()
        if self.lease_lost and self.state is TRANSACTION:
            return command, Reply(False, LEASE_LOST, code=IN_USE, close=True)
        try:
            return command, await spec.handler(self, command.arg)
        except Pop3Error as error:
            return command, error.reply()

    def account(self, reply: Reply) -> Reply:
        """The bad-command budget and the pre-login command limit."""
        if reply.bad:
            self.bad_commands += 1
            if self.bad_commands >= self.settings.max_bad_commands:
                return Reply(False, BAD_BUDGET, code=reply.code, close=True)
        if self.state is AUTHORIZATION and not reply.close:
            self.commands_before_login += 1
            if self.commands_before_login >= self.settings.max_commands_before_login:
                return Reply(False, PRE_LOGIN_BUDGET, close=True)
        return reply

    async def run(self) -> None:
        """RFC 1939 §4: greet, then one reply per command line until QUIT, a limit, the
        idle timer or the client ends the session."""
        await self._send(Reply(True, GREETING.format(host=self.host)))
        while True:
            try:
                with self.conn.idle():  # a graceful drain may end the session here
                    line = await self._read(grammar.COMMAND_LINE_LIMIT)
            except LineTooLong:
                line = None
            started = time.perf_counter()
            if line is None:
                command, reply = None, Reply(False, LINE_TOO_LONG, bad=True)  # RFC 2449 §4
            else:
                command, reply = await self.execute(line)
            reply = self.account(await self._follow(reply))
            self._log(command, reply, started)
            await self._send(reply)
            if reply.starttls:
                await self._start_tls()
            if reply.close:
                return

    async def _follow(self, reply: Reply) -> Reply:
        """SASL continuations (RFC 5034 §4): "+ " and one client line, until a final reply."""
        while reply.continuation is not None:
            self.conn.writer.write(b"+ \r\n")
            await self._drain()
            try:
                line = await self._read(grammar.SASL_LINE_LIMIT)
            except LineTooLong:
                return Reply(False, "SASL response too long", bad=True)
            try:
                reply = await reply.continuation(line)
            except Pop3Error as error:
                reply = error.reply()
        return reply

    async def _read(self, limit: int) -> bytes:
        """One line, at the minimum data rate once begun."""
        timeout, expired = self._line_wait()
        try:
            async with asyncio.timeout(timeout):
                return await read_line(self.conn.reader, limit, self.settings.min_rate)
        except TooSlow:
            await self._hang_up("Too slow, closing connection")
        except TimeoutError:
            if expired:
                await self._hang_up(expired)
            # RFC 1939 §3: on the autologout timer, close without UPDATE and without a reply.
            log.info("pop3 session=%s idle timeout", self.conn.session_id)
            raise ConnectionClosed from None

    def _line_wait(self) -> tuple[float, str]:
        """How long the next line may be waited for: the autologout timer (RFC 1939 §3);
        before login, no longer than what is left of ``login_deadline``, and then the
        client is told (the second item)."""
        left = self.login_by - asyncio.get_running_loop().time()
        if self.state is AUTHORIZATION and left < self.settings.idle_timeout:
            return max(0.0, left), "No login in time, closing connection"
        return self.settings.idle_timeout, ""

    async def _hang_up(self, text: str) -> NoReturn:
        """-ERR and close; never UPDATE, so nothing is removed (RFC 1939 §6)."""
        log.info("pop3 session=%s %s", self.conn.session_id, text)
        with contextlib.suppress(ConnectionClosed, ConnectionError):
            await self._send(Reply(False, text))
        raise ConnectionClosed

    async def _send(self, reply: Reply) -> None:
        writer = self.conn.writer
        if reply.body is not None:
            writer.write(reply.status_line() + reply.body)
        else:
            writer.write(reply.status_line())
            if reply.stream is not None:
                async for chunk in reply.stream:
                    writer.write(chunk)
                    await self._drain()
        await self._drain()

    async def _drain(self) -> None:
        writer = self.conn.writer
        if writer.transport.get_write_buffer_size() <= _WRITE_HIGH_WATER:
            await writer.drain()
            return
        try:
            async with asyncio.timeout(self.settings.idle_timeout):
                await writer.drain()
        except TimeoutError:
            log.info("pop3 session=%s client stopped reading", self.conn.session_id)
            raise ConnectionClosed from None

    async def _start_tls(self) -> None:
        """RFC 2595 §4: TLS starts right after the +OK. Plaintext the client pipelined after
        STLS is dropped, never read as commands under TLS (command injection)."""
        pending = getattr(self.conn.reader, "_buffer", None)
        if isinstance(pending, bytearray) and pending:
            log.warning("pop3 session=%s dropped %d octets sent after STLS", self.conn.session_id, len(pending))
            pending.clear()
        try:
            await self.conn.writer.start_tls(self.conn.tls, ssl_handshake_timeout=self.settings.tls_handshake_timeout)
        except (ssl.SSLError, OSError, TimeoutError) as error:
            log.info("pop3 session=%s TLS handshake failed: %s", self.conn.session_id, type(error).__name__)
            raise ConnectionClosed from None

    def _log(self, command: grammar.Command | None, reply: Reply, started: float) -> None:
        if command is None:
            record = CommandRecord("-", "", started)
        elif command.verb in COMMANDS:
            record = CommandRecord(command.verb, command.arg, started)
        else:
            record = CommandRecord("?", "", started)  # an unknown "verb" may be a stray password
        status = "+OK" if reply.ok else "-ERR"
        log_command(log, self.conn, "pop3", record, user=self.locked_user, status=status, code=reply.code)

    async def end(self) -> None:
        """The session is over however it ended: without QUIT nothing is removed (RFC 1939
        §6), and the lock is released (the lease would expire anyway)."""
        await asyncio.shield(self._release())


def _server_error(what: str, error: BaseException) -> TemporaryError:
    correlation = uuid.uuid4().hex[:12]
    log.error("pop3 %s: %s (correlation %s)", what, type(error).__name__, correlation)
    return TemporaryError(correlation)


# -- the command table -----------------------------------------------------------------------


@dataclass(frozen=True)
class CommandSpec:
    handler: Callable[[Session, str], Awaitable[Reply]]
    states: frozenset[State]


_AUTHORIZATION = frozenset({AUTHORIZATION})
_TRANSACTION = frozenset({TRANSACTION})
_BOTH = frozenset({AUTHORIZATION, TRANSACTION})

#: RFC 1939 §4-§7, RFC 2449 §5, RFC 2595 §4, RFC 5034 §4: command -> handler, valid states.
COMMANDS: dict[str, CommandSpec] = {
    "CAPA": CommandSpec(Session.cmd_capa, _BOTH),
    "QUIT": CommandSpec(Session.cmd_quit, _BOTH),
    "USER": CommandSpec(Session.cmd_user, _AUTHORIZATION),
    "PASS": CommandSpec(Session.cmd_pass, _AUTHORIZATION),
    "AUTH": CommandSpec(Session.cmd_auth, _AUTHORIZATION),
    "STLS": CommandSpec(Session.cmd_stls, _AUTHORIZATION),
    "STAT": CommandSpec(Session.cmd_stat, _TRANSACTION),
    "LIST": CommandSpec(Session.cmd_list, _TRANSACTION),
    "RETR": CommandSpec(Session.cmd_retr, _TRANSACTION),
    "DELE": CommandSpec(Session.cmd_dele, _TRANSACTION),
    "NOOP": CommandSpec(Session.cmd_noop, _TRANSACTION),
    "RSET": CommandSpec(Session.cmd_rset, _TRANSACTION),
    "TOP": CommandSpec(Session.cmd_top, _TRANSACTION),
    "UIDL": CommandSpec(Session.cmd_uidl, _TRANSACTION),
}


async def serve(conn: Connection) -> None:
    """The POP3 protocol on one connection (the gateway's ``protocols()["pop3"]``)."""
    settings = conn.services.get("pop3")
    if not isinstance(settings, Pop3Settings):
        settings = conn.services["pop3"] = Pop3Settings.from_env()
    session = Session(conn, settings, BlobReader.shared(conn))
    try:
        await session.run()
    except ConnectionClosed:
        pass
    except BlobUnavailable as error:
        # A message failed part-way through: the reply cannot be taken back, so hang up.
        log.warning("pop3 session=%s message stream failed: %s", conn.session_id, error)
    finally:
        await session.end()
