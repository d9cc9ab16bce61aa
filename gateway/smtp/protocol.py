"""The server side of one SMTP connection (RFC 5321), in the MX role.

The loop reads one command line, finds the verb in :data:`COMMANDS` (a table: handler,
the states where the command is legal, and the reply it gets elsewhere), runs the
handler and writes its reply. Handlers are ``async def cmd_<verb>(self, argument) ->
Reply``: they may read (a BDAT chunk) and call functions, but never write, so replies
leave in command order however the client pipelines (RFC 2920 §3.1). Three replies
carry an action the loop performs after writing them: 354 (read the DATA), 220 to
STARTTLS (the TLS handshake) and 221/421 (close).

Durability (DESIGN.md contract 2): the reply to the end of the data is 250 only after the
IngestFunction's ``deliver`` returned for all recipients; any failure before that is
451 4.3.0 (RFC 5321 §4.2.5) and the client retries, deduplicated by the delivery.

The message goes to ``deliver`` inline when it is within ``SmtpLimits.inline_size``
(256 KiB), else through S3 staging (DESIGN.md contract 1): a small message then costs
the gateway no AWS request, and the delivery no staging read.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from mailcore.contracts import Deliver, Request

from gateway.commandlog import CommandRecord, log_command
from gateway.functions import TemporaryFailure
from gateway.smtp import replies
from gateway.smtp.data import MessageSink, receive_chunk, receive_dot_stuffed
from gateway.smtp.grammar import (
    GrammarError,
    MailParameters,
    RcptCommand,
    RcptParameters,
    parse_bdat_command,
    parse_command_line,
    parse_ehlo_domain,
    parse_mail_command,
    parse_rcpt_command,
)
from gateway.smtp.limits import COMMAND_LINE, LONGEST_COMMAND_LINE, MAIL_LINE, RCPT_LINE, SmtpLimits
from gateway.smtp.recipients import FOREIGN, INGEST, Verdict, check_postmaster, check_recipient
from gateway.smtp.replies import Action, Reply
from gateway.smtp.session import Recipient, Session, State, Transaction
from gateway.smtp.trace import TlsInfo, TraceInfo, received, return_path
from gateway.staging import StagedObject, StagingUpload, new_staging_key
from gateway.wire.lines import ConnectionClosed, LineTooLong, TooSlow, read_line

if TYPE_CHECKING:
    from gateway.server import Connection

log = logging.getLogger(__name__)


class SmtpService:
    """What every SMTP connection of one gateway shares: the limits and the S3 client
    that stages messages. (How many connections may be open is the gateway's own limit,
    gateway/connlimits.py, for every protocol alike.)"""

    def __init__(self, limits: SmtpLimits | None = None) -> None:
        self.limits = limits or SmtpLimits.from_env()
        self._s3: Any = None

    async def s3(self, clients: Any) -> Any:
        """The gateway's S3 client; building it blocks, so the first use does that in a thread."""
        if self._s3 is None:
            self._s3 = await asyncio.to_thread(lambda: clients.s3)
        return self._s3


def temporary_failure(correlation_id: str) -> Reply:
    """451 4.3.0 with the id that is in our logs, and nothing else (no exception text)."""
    return replies.S451_TEMPORARY.with_text(f"Error: temporary failure, try again later (ref {correlation_id})")


def dedup_key(sender: str, content_sha256: str) -> str:
    """The same client bytes from the same sender are the same message (DESIGN.md contract 3).

    The recipient is not part of the key: the delivery keeps one record per receiving
    mailbox, so a retry with fewer or more recipients still delivers each of them once.
    Our own trace fields are not part of it either: they differ on every attempt.
    """
    return hashlib.sha256(f"smtp\0{sender}\0{content_sha256}".encode()).hexdigest()


class SmtpProtocol:
    #: The command table (set below to :data:`COMMANDS`); a listener with other rules
    #: (submission, gateway/smtp/submission.py) subclasses and brings its own.
    commands: ClassVar[Mapping[str, CommandSpec]]
    #: Who logged in (submission's AUTH); the MX role takes no logins.
    principal: str | None = None
    #: Submission: AUTH must succeed within ``SmtpLimits.login_deadline`` of the greeting.
    requires_login: ClassVar[bool] = False

    def __init__(self, conn: Connection, service: SmtpService) -> None:
        self.conn = conn
        self.service = service
        self.limits = service.limits
        self.hostname = conn.config.hostname
        self.session = Session(conn.session_id, conn.peer[0])
        #: The command being answered, for its log line (gateway/commandlog.py).
        self.command: CommandRecord | None = None
        self.login_by = asyncio.get_running_loop().time() + self.limits.login_deadline
        #: Junk commands (NOOP, VRFY, RSET, HELP, EHLO, HELO) since the last accepted message.
        self.junk = 0

    # -- the loop ------------------------------------------------------------------

    async def run(self) -> None:
        log.info("smtp %s: connection from %s", self.session.session_id, self.session.client_ip)
        try:
            if await self.respond(replies.greeting(self.hostname)):
                while await self.respond(await self.next_reply()):
                    pass
        except ConnectionClosed:
            pass
        finally:
            await self.abort_transaction()
            log.info(
                "smtp %s: closed after %d transaction(s), %d error(s)",
                self.session.session_id,
                self.session.transactions,
                self.session.errors,
            )

    async def next_reply(self) -> Reply | None:
        """Read and handle one command; None when the client is gone."""
        try:
            with self.conn.idle():  # a graceful drain may end the session here
                async with asyncio.timeout(self.command_wait()):
                    line = await read_line(self.conn.reader, LONGEST_COMMAND_LINE - 2, self.limits.min_rate)
        except TimeoutError as error:
            return self.timed_out(error)
        except LineTooLong:
            return replies.S500_LINE_TOO_LONG
        except ConnectionClosed:
            return None
        try:
            return await self.dispatch(line)
        except TimeoutError as error:  # a BDAT chunk that stopped arriving
            return self.timed_out(error)
        except ConnectionClosed:
            return None

    def command_wait(self) -> float:
        """RFC 5321 §4.5.3.2.7: at least 5 minutes for the next command; but a session
        that must log in (submission) gets no more than what is left of ``login_deadline``."""
        if not self.login_pending():
            return self.limits.command_timeout
        left = self.login_by - asyncio.get_running_loop().time()
        return max(0.0, min(self.limits.command_timeout, left))

    def login_pending(self) -> bool:
        return self.requires_login and self.principal is None

    def timed_out(self, error: TimeoutError) -> Reply:
        """421 4.4.2 (RFC 3463: delivery time expired), whichever timer ran out; the log says which."""
        if isinstance(error, TooSlow):
            why = f"below the minimum data rate ({self.limits.min_data_rate:g} octets/s)"
        elif self.login_pending() and asyncio.get_running_loop().time() >= self.login_by:
            why = f"no login within {self.limits.login_deadline:g} s"
        else:
            why = "timeout"
        log.info("smtp %s: %s, closing", self.session.session_id, why)
        return replies.S421_TIMEOUT

    def too_much_junk(self) -> bool:
        """Postfix ``smtpd_junk_command_limit``: a client that only spins (NOOP, RSET ...)
        holds a slot; beyond the limit since the last accepted message, it is let go."""
        self.junk += 1
        if not self.limits.junk_commands or self.junk <= self.limits.junk_commands:
            return False
        log.info("smtp %s: more than %d junk commands, closing", self.session.session_id, self.limits.junk_commands)
        return True

    async def dispatch(self, line: bytes) -> Reply:
        self.command = CommandRecord("?")
        try:
            command = parse_command_line(line)
        except GrammarError as error:
            return error.reply
        verb = "HEADER:" if command.verb.endswith(":") else command.verb
        spec = self.commands.get(verb)
        if spec is None:
            return replies.S500_UNRECOGNIZED
        self.command.verb, self.command.argument = verb, command.argument
        if len(line) + 2 > spec.line_limit:  # RFC 5321 §4.5.3.1.4, CRLF included
            return replies.S500_LINE_TOO_LONG
        if spec.junk and self.too_much_junk():
            return replies.S421_TOO_MANY_ERRORS
        if self.session.state not in spec.states:
            return spec.refusals[self.session.state]
        try:
            return await spec.handler(self, command.argument)
        except GrammarError as error:
            return error.reply
        except TemporaryFailure as failure:
            return temporary_failure(failure.correlation_id)

    async def respond(self, reply: Reply | None) -> bool:
        """Write ``reply`` and do what it asks; False when the session is over."""
        if reply is None:
            return False
        await self.send(reply)
        if reply.action is Action.CLOSE:
            return False
        if reply.action is Action.DATA:
            try:
                return await self.respond(await self.receive_data())
            except TimeoutError as error:
                return await self.respond(self.timed_out(error))
            except ConnectionClosed:
                return False
        if reply.action is Action.STARTTLS:
            return await self.start_tls()
        if self.session.errors >= self.limits.bad_commands:
            return await self.respond(replies.S421_TOO_MANY_ERRORS)
        return True

    async def send(self, reply: Reply) -> None:
        if reply.code >= 500:
            self.session.errors += 1
        self.log_reply(reply)
        self.conn.writer.write(reply.render())
        try:
            async with asyncio.timeout(self.limits.command_timeout):  # a client that does not read
                await self.conn.writer.drain()
        except TimeoutError as error:
            raise ConnectionClosed from error

    def log_reply(self, reply: Reply) -> None:
        """The command's log line, at its final reply (not at a 334 or 354 on the way);
        a 4xx/5xx without a command (a line too long, a timeout) gets one too."""
        if 300 <= reply.code < 400:
            return
        record, self.command = self.command, None
        if record is None and reply.code < 400:
            return  # the greeting
        status, code = str(reply.code), reply.enhanced
        log_command(log, self.conn, "smtp", record or CommandRecord(), user=self.principal, status=status, code=code)

    def input_pending(self) -> bool:
        """Bytes the client sent that we have not read yet.

        asyncio offers no public way to ask a StreamReader this; its buffer is the only
        place plaintext sent after STARTTLS could hide (CVE-2011-0411).
        """
        return bool(getattr(self.conn.reader, "_buffer", b""))

    # -- transactions -----------------------------------------------------------------

    async def abort_transaction(self) -> None:
        transaction, self.session.transaction = self.session.transaction, None
        if transaction is not None and transaction.sink is not None:
            await transaction.sink.abort()
        if self.session.state is not State.INITIAL:
            self.session.state = State.READY

    async def open_sink(self, transaction: Transaction) -> MessageSink:
        """Start staging this message, our trace fields first (RFC 5321 §4.4)."""
        s3 = await self.service.s3(self.conn.services["aws"])
        key = new_staging_key(self.session.transaction_id(transaction))
        upload = StagingUpload(s3, self.conn.config.mail_bucket, key, inline_limit=self.limits.inline_size)
        prefix = self.trace_fields(transaction)
        transaction.sink = MessageSink(upload, self.limits.message_size, prefix.encode("utf-8"))
        return transaction.sink

    def trace_fields(self, transaction: Transaction) -> str:
        """What goes above the client's bytes: the delivery server's Return-Path and Received."""
        return return_path(transaction.reverse_path) + received(self.trace_info(transaction))

    def trace_info(self, transaction: Transaction) -> TraceInfo:
        ssl_object = self.conn.writer.get_extra_info("ssl_object")
        tls = None
        if ssl_object is not None:
            cipher, _, bits = ssl_object.cipher() or ("unknown", "", 0)
            tls = TlsInfo(ssl_object.version() or "TLS", cipher, bits)
        return TraceInfo(
            helo=self.session.helo,
            client_ip=self.session.client_ip,
            hostname=self.hostname,
            esmtp=self.session.esmtp,
            smtputf8=transaction.parameters.smtputf8,
            tls=tls,
            transaction_id=self.session.transaction_id(transaction),
            recipients=tuple(r.address for r in transaction.recipients),
        )

    def delivery_request(
        self, transaction: Transaction, sink: MessageSink, staged: StagedObject
    ) -> tuple[str, Request]:
        """The function and the request that take the message: the IngestFunction's ``deliver``."""
        return INGEST, Deliver(
            staging_key=staged.key,
            message=base64.b64encode(staged.data).decode("ascii") if staged.data is not None else "",
            sender=transaction.sender,
            recipients=[r.address for r in transaction.recipients],
            dedup_key=dedup_key(transaction.sender, sink.sha256),
            ret=transaction.parameters.ret,
            envid=transaction.parameters.envid,
            notify=[",".join(r.notify) for r in transaction.recipients],
            orcpt=[r.orcpt for r in transaction.recipients],
        )

    def refusal(self, result: dict[str, Any]) -> Reply:
        """The reply to a delivery the function refused (``ok`` false)."""
        if result.get("error") == "NONEXISTENT":
            return replies.S550_NO_LOCAL_RECIPIENT
        return replies.S554_TRANSACTION_FAILED

    async def deliver(self, transaction: Transaction, sink: MessageSink) -> Reply:
        """End of data: finish staging (or take the bytes inline), deliver to every
        recipient, and only then say 250."""
        transaction_id = self.session.transaction_id(transaction)
        try:
            if sink.too_big:
                return replies.S552_TOO_BIG  # RFC 1870 §6.3, after reading to the end
            staged = await sink.finish()
            function, request = self.delivery_request(transaction, sink, staged)
            result = await self.conn.functions.call(function, request)
        except TemporaryFailure as failure:
            return temporary_failure(failure.correlation_id)
        except Exception:  # staging failed (S3), or anything unforeseen: never a false 250
            correlation = uuid.uuid4().hex[:12]
            log.exception(
                "smtp %s: delivery of %s failed (correlation %s)", self.session.session_id, transaction_id, correlation
            )
            return temporary_failure(correlation)
        finally:
            await sink.abort()  # a no-op once finished
            self.session.transaction = None
            self.session.state = State.READY
        if not result.get("ok"):
            log.info("smtp %s: %s refused: %s", self.session.session_id, transaction_id, result.get("error"))
            return self.refusal(result)
        log.info(
            "smtp %s: %s delivered, %d octets, %d recipient(s)",
            self.session.session_id,
            transaction_id,
            sink.size,
            len(transaction.recipients),
        )
        self.junk = 0  # mail accepted: the client is no spinner
        return replies.S250_QUEUED.with_text(f"Ok: queued as {transaction_id}")

    async def receive_data(self) -> Reply:
        """After 354: the dot-stuffed data, then the delivery's reply (RFC 5321 §4.1.1.4)."""
        transaction = self.session.transaction
        assert transaction is not None  # DATA is legal only in State.RCPT
        sink = await self.open_sink(transaction)
        try:
            await receive_dot_stuffed(self.conn.reader, sink, self.limits.data_timeout, self.limits.min_rate)
        except BaseException:
            await self.abort_transaction()
            raise
        return await self.deliver(transaction, sink)

    async def start_tls(self) -> bool:
        """RFC 3207 §4: the handshake; §4.2: then forget everything the client said before."""
        if self.input_pending():  # arrived while the 220 was written: refuse, as in cmd_starttls
            log.warning("smtp %s: input pipelined after STARTTLS, closing", self.session.session_id)
            return False
        try:
            await self.conn.writer.start_tls(self.conn.tls, ssl_handshake_timeout=self.limits.tls_handshake_timeout)
        except (OSError, TimeoutError) as error:  # ssl.SSLError is an OSError
            log.info("smtp %s: TLS handshake failed: %s", self.session.session_id, type(error).__name__)
            return False
        await self.abort_transaction()
        old = self.session
        self.session = Session(old.session_id, old.client_ip, transactions=old.transactions, errors=old.errors)
        return True

    # -- handlers -------------------------------------------------------------------

    async def cmd_ehlo(self, argument: str) -> Reply:
        """RFC 5321 §4.1.1.1; the extensions we honour (RFC 5321 §2.2.2). EHLO also resets
        a transaction in progress (RFC 5321 §4.1.4). No enhanced code (RFC 2034 §3)."""
        name = parse_ehlo_domain(argument)
        await self.abort_transaction()
        self.session.helo, self.session.esmtp, self.session.state = name, True, State.READY
        extensions = [
            "PIPELINING",  # RFC 2920
            f"SIZE {self.limits.message_size}",  # RFC 1870
            *([] if self.conn.secure else ["STARTTLS"]),  # RFC 3207 §4.2: not after TLS
            "ENHANCEDSTATUSCODES",  # RFC 2034
            "8BITMIME",  # RFC 6152
            "DSN",  # RFC 3461
            "SMTPUTF8",  # RFC 6531
            "CHUNKING",  # RFC 3030
        ]
        return Reply(250, "", (self.hostname, *extensions))

    async def cmd_helo(self, argument: str) -> Reply:
        """RFC 5321 §4.1.1.1: plain SMTP, no extensions."""
        name = parse_ehlo_domain(argument)
        await self.abort_transaction()
        self.session.helo, self.session.esmtp, self.session.state = name, False, State.READY
        return Reply(250, "", (self.hostname,))

    async def cmd_mail(self, argument: str) -> Reply:
        """RFC 5321 §4.1.1.2 ``MAIL FROM:<reverse-path> [SP Mail-parameters]``."""
        command = parse_mail_command(argument)
        parameters, path = command.parameters, command.reverse_path
        if not self.session.esmtp and parameters != MailParameters():
            return replies.S555_UNSUPPORTED_PARAMETER  # RFC 5321 §4.1.1.11: extensions need EHLO
        if path is not None and not parameters.smtputf8 and not str(path).isascii():
            return replies.S553_NON_ASCII  # RFC 6531 §3.5
        if parameters.size is not None and parameters.size > self.limits.message_size:
            return replies.S552_TOO_BIG  # RFC 1870 §6.1: the declared size is over the limit
        self.session.begin(path, parameters)
        return replies.S250_SENDER_OK

    async def cmd_rcpt(self, argument: str) -> Reply:
        """RFC 5321 §4.1.1.3; whether we accept the recipient is the IngestFunction's call."""
        command = parse_rcpt_command(argument)
        transaction = self.session.transaction
        assert transaction is not None  # RCPT is legal only in State.MAIL and State.RCPT
        if not self.session.esmtp and command.parameters != RcptParameters():
            return replies.S555_UNSUPPORTED_PARAMETER
        if len(transaction.recipients) >= self.limits.recipients:
            return replies.S452_TOO_MANY_RECIPIENTS  # RFC 5321 §4.5.3.1.10
        mailbox = command.forward_path
        if not transaction.parameters.smtputf8 and not str(mailbox).isascii():
            return replies.S553_NON_ASCII  # RFC 6531 §3.5
        verdict = await self.check_recipient(command)
        if verdict.accepted:
            written = "Postmaster" if command.postmaster else str(mailbox)
            transaction.add(Recipient(verdict.address, written, command.parameters.notify, command.parameters.orcpt))
            self.session.state = State.RCPT
        return verdict.reply

    async def check_recipient(self, command: RcptCommand) -> Verdict:
        """The MX role's relay policy (gateway/smtp/recipients.py): local recipients only."""
        if command.postmaster:
            return await check_postmaster(self.conn.functions, self.hostname)
        return await check_recipient(self.conn.functions, command.forward_path, self.conn.services.get(FOREIGN))

    async def cmd_data(self, argument: str) -> Reply:
        """RFC 5321 §4.1.1.4: 354, then the data (read by the loop after the 354 is out)."""
        if argument:
            return replies.S501_SYNTAX
        return replies.S354_DATA

    async def cmd_bdat(self, argument: str) -> Reply:
        """RFC 3030 §2 ``BDAT chunk-size [LAST]``: the chunk follows the command line at once.

        A refused BDAT still reads its chunk (RFC 3030 §2). A BDAT whose size cannot be
        read leaves no way to find the next command, so the session ends.
        """
        try:
            command = parse_bdat_command(argument)
        except GrammarError as error:
            return error.reply.then(Action.CLOSE)
        refusal = BDAT_REFUSALS.get(self.session.state)
        transaction = self.session.transaction
        if refusal is not None or transaction is None:
            await receive_chunk(self.conn.reader, command.chunk_size, None, self.limits.data_timeout, self.limits.min_rate)
            return refusal or replies.S503_NEED_MAIL
        sink = transaction.sink or await self.open_sink(transaction)
        self.session.state = State.CHUNKING
        try:
            await receive_chunk(self.conn.reader, command.chunk_size, sink, self.limits.data_timeout, self.limits.min_rate)
        except BaseException:
            await self.abort_transaction()
            raise
        if sink.too_big:
            await self.abort_transaction()
            return replies.S552_TOO_BIG  # RFC 3030 §4.2 / RFC 1870: the transaction is over
        if not command.last:
            return replies.S250_CHUNK_OK.with_text(f"Ok: {command.chunk_size} octets received")
        return await self.deliver(transaction, sink)

    async def cmd_rset(self, argument: str) -> Reply:
        """RFC 5321 §4.1.1.5: abort the transaction, keep the EHLO state."""
        if argument:
            return replies.S501_SYNTAX
        await self.abort_transaction()
        return replies.S250_OK

    async def cmd_noop(self, argument: str) -> Reply:
        """RFC 5321 §4.1.1.9: an argument is ignored."""
        return replies.S250_OK

    async def cmd_quit(self, argument: str) -> Reply:
        """RFC 5321 §4.1.1.10. Deviation: an argument is ignored rather than refused."""
        return replies.S221_BYE

    async def cmd_help(self, argument: str) -> Reply:
        """RFC 5321 §4.1.1.8."""
        return replies.S214_HELP

    async def cmd_vrfy(self, argument: str) -> Reply:
        """RFC 5321 §3.5.3: 252, so VRFY is no way to probe for users (§7.3)."""
        if not argument:
            return replies.S501_SYNTAX
        return replies.S252_CANNOT_VRFY

    async def cmd_expn(self, argument: str) -> Reply:
        """RFC 5321 §7.3: EXPN may be disabled; mailing lists are nobody's business."""
        return replies.S502_EXPN_DISABLED

    async def cmd_starttls(self, argument: str) -> Reply:
        """RFC 3207 §4. Commands pipelined behind STARTTLS are refused and the session
        ends (RFC 3207 §4.2 forbids trusting them; CVE-2011-0411 shows why)."""
        if argument:
            return replies.S501_SYNTAX
        if self.conn.secure:
            return replies.S503_TLS_ACTIVE
        if self.input_pending():
            log.warning("smtp %s: commands pipelined after STARTTLS", self.session.session_id)
            return replies.S554_PIPELINED_STARTTLS
        return replies.starttls_ready()

    async def cmd_auth(self, argument: str) -> Reply:
        """RFC 4954 is for submission (RFC 6409); the MX role takes no logins."""
        return replies.S503_AUTH_NOT_ENABLED

    async def cmd_forbidden(self, argument: str) -> Reply:
        """HTTP spoken to the SMTP port (cross-protocol requests): close, as Postfix does."""
        return replies.S221_HTTP


Handler = Callable[[SmtpProtocol, str], Awaitable[Reply]]


@dataclass(frozen=True)
class CommandSpec:
    handler: Handler
    states: frozenset[State]
    refusals: Mapping[State, Reply]
    line_limit: int = COMMAND_LINE
    #: Counts against ``SmtpLimits.junk_commands``.
    junk: bool = False


ANY_STATE = frozenset(State)
_IN_TRANSACTION = (State.MAIL, State.RCPT, State.CHUNKING)


#: Verb -> handler, the states where it is legal, and the reply elsewhere (RFC 5321 §4.1.4).
COMMANDS: dict[str, CommandSpec] = {
    "EHLO": CommandSpec(SmtpProtocol.cmd_ehlo, ANY_STATE, {}, junk=True),
    "HELO": CommandSpec(SmtpProtocol.cmd_helo, ANY_STATE, {}, junk=True),
    "MAIL": CommandSpec(
        SmtpProtocol.cmd_mail,
        frozenset({State.READY}),
        {State.INITIAL: replies.S503_SEND_HELO_FIRST, **dict.fromkeys(_IN_TRANSACTION, replies.S503_NESTED_MAIL)},
        MAIL_LINE,
    ),
    "RCPT": CommandSpec(
        SmtpProtocol.cmd_rcpt,
        frozenset({State.MAIL, State.RCPT}),
        {
            State.INITIAL: replies.S503_NEED_MAIL,
            State.READY: replies.S503_NEED_MAIL,
            State.CHUNKING: replies.S503_BAD_SEQUENCE,
        },
        RCPT_LINE,
    ),
    "DATA": CommandSpec(
        SmtpProtocol.cmd_data,
        frozenset({State.RCPT}),
        {
            State.INITIAL: replies.S503_NEED_MAIL,
            State.READY: replies.S503_NEED_MAIL,
            State.MAIL: replies.S554_NO_VALID_RECIPIENTS,  # RFC 5321 §3.3, RFC 2920 §3.1
            State.CHUNKING: replies.S503_DATA_AFTER_BDAT,  # RFC 3030 §3
        },
    ),
    "BDAT": CommandSpec(SmtpProtocol.cmd_bdat, ANY_STATE, {}),  # refuses by BDAT_REFUSALS after reading
    "RSET": CommandSpec(SmtpProtocol.cmd_rset, ANY_STATE, {}, junk=True),
    "NOOP": CommandSpec(SmtpProtocol.cmd_noop, ANY_STATE, {}, junk=True),
    "QUIT": CommandSpec(SmtpProtocol.cmd_quit, ANY_STATE, {}),
    "HELP": CommandSpec(SmtpProtocol.cmd_help, ANY_STATE, {}, junk=True),
    "VRFY": CommandSpec(SmtpProtocol.cmd_vrfy, ANY_STATE, {}, junk=True),
    "EXPN": CommandSpec(SmtpProtocol.cmd_expn, ANY_STATE, {}),
    "STARTTLS": CommandSpec(
        SmtpProtocol.cmd_starttls,
        frozenset({State.INITIAL, State.READY}),
        dict.fromkeys(_IN_TRANSACTION, replies.S503_TRANSACTION_IN_PROGRESS),
    ),
    "AUTH": CommandSpec(SmtpProtocol.cmd_auth, ANY_STATE, {}),
    # Postfix ``smtpd_forbidden_commands``: HTTP methods and header lines ("Host: ...").
    **{verb: CommandSpec(SmtpProtocol.cmd_forbidden, ANY_STATE, {}) for verb in ("CONNECT", "GET", "POST", "HEADER:")},
}

SmtpProtocol.commands = COMMANDS

#: BDAT outside a transaction with recipients: the chunk is read, then this reply.
BDAT_REFUSALS: dict[State, Reply] = {
    State.INITIAL: replies.S503_SEND_HELO_FIRST,
    State.READY: replies.S503_NEED_MAIL,
    State.MAIL: replies.S554_NO_VALID_RECIPIENTS,
}


async def serve(conn: Connection) -> None:
    """The ``smtp`` listener's entry point (gateway.server.protocols).

    The gateway's ``services["smtp"]`` holds the :class:`SmtpService` (tests give one
    with small limits); without one, the first connection makes it from the environment.
    """
    service = conn.services.get("smtp")
    if not isinstance(service, SmtpService):
        service = conn.services["smtp"] = SmtpService()
    await SmtpProtocol(conn, service).run()
