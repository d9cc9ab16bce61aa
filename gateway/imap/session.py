"""The IMAP session: RFC 3501 §3 states, reading commands (with their literals), the
dispatch through :data:`gateway.imap.commands.COMMANDS`, untagged updates, IDLE.

One loop reads a command, runs its handler, writes the handler's untagged data, then the
updates the selected mailbox owes the client (RFC 3501 §7.4.1: no EXPUNGE after FETCH,
STORE or SEARCH), then the tagged status. Handlers never write.

Literals (RFC 3501 §4.3, RFC 7888): the parser stops at a literal it has not got
(:class:`~gateway.imap.grammar.NeedLiteral`); the size is checked before a single octet
is read, a synchronizing literal gets ``+``, and an APPEND message is streamed to S3
``staging/`` instead of being held. After a refused command that carried a
non-synchronizing literal the connection is closed: its octets are already on the way
and cannot be told apart from commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from mailcore.contracts import Changes, Request

from gateway.blobs import BlobReader, BlobUnavailable
from gateway.commandlog import CommandRecord, log_command
from gateway.functions import TemporaryFailure
from gateway.imap import grammar, syntax
from gateway.imap.commands import COMMANDS
from gateway.imap.metadata import MetadataCache
from gateway.imap.responses import (
    CLIENTBUG,
    SERVERBUG,
    TOOBIG,
    Bad,
    ImapError,
    No,
    Response,
    Unavailable,
    server_error,
    tagged,
)
from gateway.imap.settings import ImapSettings
from gateway.imap.states import AUTHENTICATED, NOT_AUTHENTICATED, SELECTED, State
from gateway.imap.view import MailboxGone, MailboxView
from gateway.imap.watcher import Subscription, Watcher
from gateway.staging import StagingUpload, new_staging_key
from gateway.wire.lines import ConnectionClosed, LineTooLong, Pace, TooSlow, read_line

if TYPE_CHECKING:
    from gateway.server import Connection

log = logging.getLogger(__name__)

#: Above this many unsent octets a write waits for the client.
_WRITE_HIGH_WATER = 256 * 1024
_STREAM_CHUNK = 256 * 1024
#: RFC 3501 §7.1.5 BYE texts of the timers.
_AUTOLOGOUT = "Autologout; idle for too long"
_NO_LOGIN = "Autologout; no login in time"
_TOO_SLOW = "Too slow; the connection is closed"


@dataclass
class Services:
    """What all IMAP sessions of one gateway share."""

    settings: ImapSettings
    watcher: Watcher
    blobs: BlobReader
    metadata: MetadataCache

    @classmethod
    def shared(cls, conn: Connection) -> Services:
        services = conn.services.get("imap.shared")
        if not isinstance(services, Services):
            settings = conn.services.get("imap")
            if not isinstance(settings, ImapSettings):
                settings = ImapSettings.from_env()
            watcher = Watcher(conn.functions, settings.poll_interval, settings.poll_min_gap)
            services = cls(settings, watcher, BlobReader.shared(conn), MetadataCache())
            conn.services["imap.shared"] = services
        return services


def _ends_with_literal(line: bytes) -> tuple[int, bool] | None:
    """``(size, synchronizing)`` when a line announces a literal (RFC 3501 §4.3)."""
    if not line.endswith(b"}"):
        return None
    start = line.rfind(b"{")
    inner = line[start + 1 : -1] if start >= 0 else b""
    sync = not inner.endswith(b"+")
    digits = inner if sync else inner[:-1]
    if not digits.isdigit() or len(digits) > 20:
        return None
    return int(digits), sync


class Session:
    def __init__(self, conn: Connection, services: Services) -> None:
        self.conn = conn
        self.services = services
        self.settings = services.settings
        self.state = NOT_AUTHENTICATED
        self.user: str | None = None
        self.view: MailboxView | None = None
        self.subscription: Subscription | None = None
        #: RFC 7162 §3.1: CONDSTORE enabled (ENABLE, SELECT (CONDSTORE), or a MODSEQ use).
        self.condstore = False
        self.bad_commands = 0
        self.commands_before_login = 0
        self.closing = False
        self.login_by = asyncio.get_running_loop().time() + self.settings.login_deadline

    @property
    def host(self) -> str:
        return self.conn.config.hostname

    # -- capabilities (RFC 3501 §6.1.1) -------------------------------------------------

    def plaintext_permitted(self) -> bool:
        return self.settings.plaintext_permitted(self.conn.secure, self.conn.peer[0])

    def capabilities(self) -> list[str]:
        caps = ["IMAP4rev1"]
        if self.state is NOT_AUTHENTICATED:
            if not self.conn.secure:
                caps.append("STARTTLS")  # RFC 3501 §6.2.1
            if self.plaintext_permitted():
                caps += ["AUTH=PLAIN", "AUTH=LOGIN"]  # RFC 4616, draft-murchison-sasl-login
            else:
                caps.append("LOGINDISABLED")  # RFC 3501 §6.2.3
        caps += [
            "SASL-IR",  # RFC 4959
            "LITERAL+",  # RFC 7888
            "ID",  # RFC 2971
            "ENABLE",  # RFC 5161
            "IDLE",  # RFC 2177
            "NAMESPACE",  # RFC 2342
            "UNSELECT",  # RFC 3691
            "UIDPLUS",  # RFC 4315
            "MOVE",  # RFC 6851
            "CHILDREN",  # RFC 3348
            "SPECIAL-USE",  # RFC 6154
            "LIST-EXTENDED",  # RFC 5258
            "LIST-STATUS",  # RFC 5819
            "CONDSTORE",  # RFC 7162
            "ESEARCH",  # RFC 4731
            f"APPENDLIMIT={self.settings.max_message}",  # RFC 7889
        ]
        return caps

    # -- calling the functions ----------------------------------------------------------------

    async def call(self, request: Request, *, codes: dict[str, str] | None = None) -> dict[str, Any]:
        """A MailboxFunction call: a refusal becomes ``NO [code]`` (``codes`` maps the
        function's codes to the ones this command answers; CLIENTBUG, the function's word
        for invalid input, is CANNOT unless mapped otherwise), a failure ``NO [UNAVAILABLE]``."""
        try:
            result = await self.conn.functions.call("MailboxFunction", request)
        except TemporaryFailure as failure:
            raise Unavailable(failure.correlation_id) from None
        if not result.get("ok"):
            code = str(result.get("error") or "CANNOT")
            code = {CLIENTBUG: "CANNOT", **(codes or {})}.get(code, code)
            raise No(_REFUSALS.get(code, "Cannot do that"), code)
        return result

    # -- the selected mailbox -----------------------------------------------------------------

    def select(self, view: MailboxView) -> None:
        self.deselect()
        assert self.user is not None
        self.view = view
        self.subscription = self.services.watcher.subscribe(self.user, view.name, view.highestmodseq)
        self.state = SELECTED

    def deselect(self) -> None:
        if self.subscription is not None:
            self.services.watcher.unsubscribe(self.subscription)
        self.subscription = None
        self.view = None
        if self.state is SELECTED:
            self.state = AUTHENTICATED

    async def sync(self, force: bool = False) -> None:
        """Learn what other sessions changed (one ``changes`` call) when the poller saw the
        mailbox move beyond this view, or when ``force`` is set."""
        view, sub = self.view, self.subscription
        if view is None or sub is None:
            return
        if not force and not self.services.watcher.changed_since(sub, view.highestmodseq):
            return
        sub.changed.clear()
        assert self.user is not None
        try:
            result = await self.call(Changes(self.user, view.name, view.since))
        except No as refusal:
            if refusal.code == "NONEXISTENT":
                raise MailboxGone(view.name) from None
            log.info("imap session=%s sync failed: %s", self.conn.session_id, refusal.code)
            return
        view.apply_changes(result, self.condstore)

    # -- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        greeting = f"* OK [CAPABILITY {' '.join(self.capabilities())}] {self.host} IMAP4rev1 ready\r\n"
        await self.write(greeting.encode())
        while not self.closing:
            started = time.perf_counter()
            command, response = await self.next_command()
            if command is not None:
                response = await self.execute(command)
                response = await self._follow(response)
                if response.idle:
                    with self.conn.idle():  # a graceful drain ends an IDLE at once
                        response = await self._idle()
            response = self._account(response, command)
            await self._send(command, response)
            self._log(command, response, started)
            if response.starttls:
                await self._start_tls()
            if response.close:
                self.closing = True

    async def execute(self, command: syntax.Command) -> Response:
        spec = COMMANDS[command.name]
        if self.state not in spec.states:
            return Bad(_wrong_state(command.name, self.state)).response()
        try:
            response = await spec.handler(self, command)
        except ImapError as error:
            response = error.response()
        except MailboxGone:
            return self._gone()
        except (BlobUnavailable, TemporaryFailure) as error:
            response = server_error(f"{command.name} failed", error).response()
        except ConnectionClosed:
            raise
        except Exception:
            # A bug of ours: the client gets a reference, the log the traceback.
            correlation = uuid.uuid4().hex[:12]
            log.exception("imap session=%s %s failed (correlation %s)", self.conn.session_id, command.name, correlation)
            response = Response("NO", f"Internal error (ref {correlation})", SERVERBUG)
        response.expunge_allowed = spec.expunge_allowed
        return response

    def _gone(self) -> Response:
        self.deselect()
        bye = b"* BYE Selected mailbox was deleted or renamed, please reconnect\r\n"
        return Response("NO", "Selected mailbox was deleted or renamed", close=True, untagged=[bye])

    def _account(self, response: Response, command: syntax.Command | None) -> Response:
        """The bad-command budget and the pre-login command limit."""
        if response.bad:
            self.bad_commands += 1
            if self.bad_commands >= self.settings.max_bad_commands:
                response.untagged.append(b"* BYE Too many invalid commands\r\n")
                response.close = True
        if self.state is NOT_AUTHENTICATED and command is not None and not response.close:
            self.commands_before_login += 1
            if self.commands_before_login >= self.settings.max_commands_before_login:
                response.untagged.append(b"* BYE Too many commands without logging in\r\n")
                response.close = True
        return response

    # -- reading commands ----------------------------------------------------------------

    async def read_line(self) -> bytes:
        """One line without CRLF (a bare LF ends one too), within ``max_line``, at the
        minimum data rate once begun."""
        timeout, expired = self._line_wait()
        try:
            async with asyncio.timeout(timeout):
                return await read_line(self.conn.reader, self.settings.max_line, self.settings.min_rate)
        except TooSlow:
            await self._hang_up(_TOO_SLOW)
        except TimeoutError:
            await self._hang_up(expired)

    def _line_wait(self) -> tuple[float, str]:
        """How long the next line may be waited for, and the BYE when it does not come:
        the autologout timer (RFC 3501 §5.4), shorter before login, and before login no
        longer than what is left of ``login_deadline``."""
        if self.state is not NOT_AUTHENTICATED:
            return self.settings.idle_timeout, _AUTOLOGOUT
        left = self.login_by - asyncio.get_running_loop().time()
        if left < self.settings.login_timeout:
            return max(0.0, left), _NO_LOGIN
        return self.settings.login_timeout, _AUTOLOGOUT

    async def _hang_up(self, text: str) -> NoReturn:
        """RFC 3501 §7.1.5: BYE to a client that ran out of time, and close."""
        log.info("imap session=%s %s", self.conn.session_id, text)
        with contextlib.suppress(ConnectionClosed):
            await self.write(f"* BYE {text}\r\n".encode())
        raise ConnectionClosed

    @contextlib.asynccontextmanager
    async def _paced(self) -> AsyncIterator[Pace]:
        """A literal, which must come at the minimum data rate."""
        try:
            async with Pace(self.conn.reader, self.settings.min_rate) as pace:
                yield pace
        except TooSlow:
            await self._hang_up(_TOO_SLOW)

    async def next_command(self) -> tuple[syntax.Command | None, Response]:
        """Read one command with its literals -> (command, _) or (None, the refusal)."""
        try:
            with self.conn.idle():  # a graceful drain may end the session here
                line = await self.read_line()
        except LineTooLong as error:
            return None, self._refuse_line(error)
        try:
            tag, name, _ = syntax.parse_command_name(line + b"\r\n")
        except grammar.ParseError as error:
            return None, self._syntax_error(error, line)
        if self.state not in COMMANDS[name].states:
            response = Bad(_wrong_state(name, self.state)).response()
            return None, self._tag(response, tag, line)
        return await self._read_arguments(tag, line)

    def _refuse_line(self, error: LineTooLong) -> Response:
        try:
            tag = grammar.Parser(error.head).tag()
        except grammar.ParseError:
            tag = "*"
        response = Bad(f"Command line too long (the limit is {self.settings.max_line} octets)").response()
        return self._tag(response, tag, error.tail)

    def _syntax_error(self, error: grammar.ParseError, line: bytes) -> Response:
        tag = syntax.error_tag(error) or "*"
        return self._tag(Bad(f"Syntax error: {error.args[0]}").response(), tag, line)

    def _tag(self, response: Response, tag: str, last_line: bytes) -> Response:
        """Attach the tag; after a refused command whose line announced a non-synchronizing
        literal, hang up (its octets follow and would be read as commands)."""
        response.tag = tag
        literal = _ends_with_literal(last_line)
        if literal is not None and not literal[1]:
            response.untagged.append(b"* BYE Refused a command with a non-synchronizing literal\r\n")
            response.close = True
        return response

    async def _read_arguments(self, tag: str, first: bytes) -> tuple[syntax.Command | None, Response]:
        buf = first + b"\r\n"
        provided: set[int] = set()
        external: dict[int, grammar.Staged] = {}
        last_line = first
        while True:
            try:
                command, _ = syntax.parse_command(buf, provided, external, self.settings.limits)
                return command, Response()
            except grammar.ParseError as error:
                return None, self._tag(Bad(f"Syntax error: {error.args[0]}").response(), tag, last_line)
            except grammar.NeedLiteral as need:
                refusal = self._check_literal(need, len(buf))
                if refusal is not None:
                    return None, self._tag(refusal, tag, last_line)
                if need.synchronizing:
                    await self.write(b"+ Ready for literal data\r\n")  # RFC 3501 §7.5
                if need.message:
                    external[need.offset] = await self._stage_message(need.size)
                else:
                    buf += await self._read_exactly(need.size)
                    provided.add(need.offset)
                try:
                    last_line = await self.read_line()
                except LineTooLong as error:
                    return None, self._refuse_line(error)
                buf += last_line + b"\r\n"
                if len(buf) > self.settings.max_command:
                    return None, self._tag(Bad("Command too long").response(), tag, last_line)

    def _check_literal(self, need: grammar.NeedLiteral, buffered: int) -> Response | None:
        if need.message:
            if need.size > self.settings.max_message:  # RFC 7889 §4, RFC 4469 §5
                return Response("NO", f"Message too large (the limit is {self.settings.max_message} octets)", TOOBIG)
            return None
        if need.size > self.settings.max_literal or buffered + need.size > self.settings.max_command:
            return Bad(f"Literal too large (the limit is {self.settings.max_literal} octets)").response()
        return None

    async def _read_exactly(self, size: int) -> bytes:
        """A literal (RFC 3501 §4.3)."""
        async with self._paced():
            return await self._take(size)

    async def _take(self, size: int) -> bytes:
        try:
            async with asyncio.timeout(self.settings.idle_timeout):
                return await self.conn.reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError, OSError, TimeoutError) as error:
            raise ConnectionClosed from error

    async def _stage_message(self, size: int) -> grammar.Staged:
        """RFC 3501 §6.3.11: the APPEND message, streamed to S3 as it arrives."""
        s3 = self.conn.services["aws"].s3
        key = new_staging_key(f"imap-{self.conn.session_id}")
        async with StagingUpload(s3, self.conn.config.mail_bucket, key) as upload:
            async with self._paced() as pace:
                left = size
                while left:
                    chunk = await self._take(min(left, _STREAM_CHUNK))
                    pace.took(len(chunk))
                    left -= len(chunk)
                    with pace.paused():  # an S3 part upload: our time, not the client's
                        await upload.write(chunk)
            staged = await upload.finish()
        return grammar.Staged(staged.key, staged.size)

    # -- SASL continuations and IDLE ------------------------------------------------------

    async def _follow(self, response: Response) -> Response:
        """RFC 3501 §6.2.2: ``+ challenge`` and one client line, until a final response."""
        while response.continuation is not None:
            await self.write(b"+ " + response.challenge + b"\r\n")
            try:
                line = await self.read_line()
            except LineTooLong:
                return Bad("SASL response too long").response()
            try:
                response = await response.continuation(line)
            except ImapError as error:
                response = error.response()
        return response

    async def _idle(self) -> Response:
        """RFC 2177 §3: ``+ idling``, updates as they happen, until ``DONE``."""
        await self.write(b"+ idling\r\n")
        reading = asyncio.ensure_future(self.read_line())
        try:
            while True:
                if self.subscription is not None:
                    self.subscription.changed.clear()
                if self.view is not None:
                    await self.sync()
                    lines = self.view.updates(True, self.condstore)
                    if lines:
                        await self.write(b"".join(lines))
                waits: set[asyncio.Future[Any]] = {reading}
                if self.subscription is not None:
                    waits.add(asyncio.ensure_future(self.subscription.changed.wait()))
                done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for task in pending - {reading}:
                    task.cancel()
                if reading in done:
                    break
        except MailboxGone:
            reading.cancel()
            return self._gone()
        except BaseException:
            reading.cancel()
            raise
        try:
            line = reading.result()
        except LineTooLong:
            return Bad("Expected DONE").response()
        if line.upper() != b"DONE":
            return Bad("Expected DONE").response()
        return Response("OK", "IDLE terminated")

    # -- writing -----------------------------------------------------------------------

    async def write(self, data: bytes) -> None:
        self.conn.writer.write(data)
        await self._drain()

    async def _drain(self) -> None:
        writer = self.conn.writer
        if writer.transport.is_closing():
            raise ConnectionClosed
        if writer.transport.get_write_buffer_size() <= _WRITE_HIGH_WATER:
            return
        try:
            async with asyncio.timeout(self.settings.idle_timeout):
                await writer.drain()
        except (TimeoutError, ConnectionError) as error:
            raise ConnectionClosed from error

    async def _send(self, command: syntax.Command | None, response: Response) -> None:
        writer = self.conn.writer
        if response.untagged:
            writer.write(b"".join(response.untagged))
        if response.stream is not None:
            try:
                async for chunk in response.stream:
                    writer.write(chunk)
                    await self._drain()
            except BlobUnavailable as error:
                # A message failed half-way: what was sent cannot be taken back.
                log.warning("imap session=%s message stream failed: %s", self.conn.session_id, error)
                raise ConnectionClosed from error
        if response.finish is not None:
            response.finish(response)
        tag = command.tag if command is not None else (response.tag or "*")
        if self.view is not None and self.state is SELECTED and not response.close:
            writer.write(b"".join(await self._updates(command, response)))
        writer.write(tagged(tag, response.status, response.code, response.text))
        await self._drain()
        if response.close:
            with contextlib.suppress(ConnectionError):
                await writer.drain()

    async def _updates(self, command: syntax.Command | None, response: Response) -> list[bytes]:
        """RFC 3501 §7.4.1 / §5.2: changes other sessions made, at the end of a command."""
        view = self.view
        assert view is not None
        try:
            await self.sync()
        except MailboxGone:
            self.deselect()
            response.close = True
            return [b"* BYE Selected mailbox was deleted or renamed, please reconnect\r\n"]
        except Unavailable:
            pass  # the next command tries again
        uid = command is not None and command.name.startswith("UID ")
        return view.updates(response.expunge_allowed, self.condstore, uid)

    async def _start_tls(self) -> None:
        """RFC 3501 §6.2.1: TLS starts right after the tagged OK. Plaintext the client
        pipelined after STARTTLS is dropped, never read as commands under TLS."""
        pending = getattr(self.conn.reader, "_buffer", None)
        if isinstance(pending, bytearray) and pending:
            log.warning("imap session=%s dropped %d octets sent after STARTTLS", self.conn.session_id, len(pending))
            pending.clear()
        try:
            await self.conn.writer.start_tls(self.conn.tls, ssl_handshake_timeout=self.settings.tls_handshake_timeout)
        except (ssl.SSLError, OSError, TimeoutError) as error:
            log.info("imap session=%s TLS handshake failed: %s", self.conn.session_id, type(error).__name__)
            raise ConnectionClosed from None

    def _log(self, command: syntax.Command | None, response: Response, started: float) -> None:
        # Arguments never (mailbox names are the user's business), but AUTHENTICATE's mechanism.
        mechanism = command.args.mechanism if command and isinstance(command.args, syntax.Authenticate) else ""
        record = CommandRecord(command.name if command else "-", mechanism, started)
        log_command(log, self.conn, "imap", record, user=self.user, status=response.status, code=response.code)

    async def end(self) -> None:
        self.deselect()


#: What the client reads for a refusal code (never the function's own message).
_REFUSALS = {
    "NONEXISTENT": "No such mailbox",
    "ALREADYEXISTS": "Mailbox already exists",
    "TRYCREATE": "No such mailbox; create it first",
    "NOPERM": "Permission denied",
    "INUSE": "In use by another session, try again later",
    "CANNOT": "Cannot do that",
    "CLIENTBUG": "Invalid request (a flag or keyword the server does not accept?)",
    "LIMIT": "Limit exceeded",
    "OVERQUOTA": "Quota exceeded",
}


def _wrong_state(name: str, state: State) -> str:
    if state is NOT_AUTHENTICATED:
        return f"{name} needs a login first"
    if state is AUTHENTICATED:
        return (
            f"{name} needs a selected mailbox"
            if name not in ("LOGIN", "AUTHENTICATE", "STARTTLS")
            else "Already logged in"
        )
    return f"{name} is not valid in the {state.value} state"


async def serve(conn: Connection) -> None:
    """IMAP on one connection (the gateway's ``protocols()["imap"]``)."""
    session = Session(conn, Services.shared(conn))
    try:
        await session.run()
    except ConnectionClosed:
        pass
    finally:
        await session.end()
