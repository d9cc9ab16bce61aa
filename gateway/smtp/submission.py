"""Message submission (RFC 6409) on 587 (STARTTLS) and 465 (implicit TLS, RFC 8314 §3.3).

The same state machine as the MX role (:mod:`gateway.smtp.protocol`), with the rules of
an MSA on top:

* AUTH (RFC 4954) with PLAIN and LOGIN, offered and accepted only over TLS (RFC 4954 §4,
  RFC 8314 §3): before TLS, AUTH and MAIL get ``530 5.7.0 Must issue a STARTTLS command
  first`` (RFC 3207 §4); after TLS and before AUTH, MAIL gets ``530 5.7.0 Authentication
  required`` (RFC 4954 §6). Port 25 never offers AUTH (its ``cmd_auth`` says 503).
* Recipients: an authenticated user may send anywhere (RFC 6409 §4.3), but a recipient
  in one of our domains must exist (the IngestFunction's ``resolve``: 550 5.1.1).
* The message goes to the SubmitFunction's ``submit`` (DESIGN.md contract 2: 250 only
  once it is delivered locally and queued for the rest), with our Received line on top
  (``with ESMTPSA``, RFC 3848) and no Return-Path (RFC 5321 §4.4: only final delivery
  adds one). The function checks that the user owns the envelope sender (RFC 6409 §6.1)
  and completes the message (Date, Message-ID: RFC 6409 §8).

The sender check happens after the data: the submit call that takes the message decides
it in the same BatchGetItem that finds the recipients' domains, so a refused sender costs
nothing extra and an accepted one no extra function call (RFC 6409 §6.3 allows the
refusal after end-of-data). Senders no user can own (address literals, quoted local
parts) are refused at MAIL without asking anybody.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from mailcore.contracts import Request, Submit

from gateway.functions import TemporaryFailure
from gateway.login import authenticate, pause
from gateway.smtp import replies
from gateway.smtp.auth import (
    MECHANISMS,
    S235_AUTHENTICATED,
    S421_AUTH_THROTTLED,
    S454_TEMPORARY,
    S454_THROTTLED,
    S500_LINE_TOO_LONG,
    S501_CANCELLED,
    S503_ALREADY_AUTHENTICATED,
    S503_EHLO_FIRST,
    S503_IN_TRANSACTION,
    S530_AUTH_REQUIRED,
    S530_STARTTLS_FIRST,
    S535_FAILED,
    SASL_LINE_LIMIT,
    Challenge,
    Credentials,
    Mechanism,
    SaslError,
    Step,
    challenge,
    decode_response,
    parse_auth_command,
)
from gateway.smtp.data import MessageSink
from gateway.smtp.grammar import GrammarError, RcptCommand, decode_xtext, is_dot_string, parse_reverse_path
from gateway.smtp.limits import SmtpLimits
from gateway.smtp.protocol import COMMANDS, CommandSpec, Handler, SmtpProtocol, SmtpService
from gateway.smtp.recipients import FOREIGN, Verdict, resolve
from gateway.smtp.replies import Reply, reply
from gateway.smtp.session import State, Transaction
from gateway.smtp.trace import protocol, received
from gateway.staging import StagedObject
from gateway.wire.lines import ConnectionClosed, LineTooLong, read_line

if TYPE_CHECKING:
    from gateway.server import Connection

log = logging.getLogger(__name__)

SUBMIT_FUNCTION = "SubmitFunction"

# -- replies of the submission policy ----------------------------------------------------------
# RFC 6409 §6.1 names 550 5.7.1; 553 5.7.1 is what Postfix's reject_sender_login_mismatch
# says (RFC 5321 §4.2.3 553: mailbox name not allowed), and what clients expect from MSAs.
S553_NOT_OWNED = reply(553, "5.7.1", "Sender address rejected: not owned by the authenticated user")
S501_UNUSABLE_SENDER = reply(501, "5.1.7", "Bad sender address syntax")
# RFC 3463 X.1.2: no MX can be found for an address literal; quoted local parts cannot be relayed.
S553_UNSUPPORTED_RECIPIENT = reply(553, "5.1.2", "Recipient address not supported for submission")


@dataclass(frozen=True)
class SubmissionSettings:
    #: Seconds before a failed AUTH is answered (Postfix ``smtpd_error_sleep_time``, Dovecot
    #: ``auth_failure_delay``): a password guesser gets one try per delay and connection.
    auth_failure_delay: float = 1.0
    #: AUTH refused by the throttle (454 4.7.0) this many times in a session: 421 and close.
    throttled_limit: int = 3

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SubmissionSettings:
        env = os.environ if env is None else env
        return cls(
            auth_failure_delay=float(env.get("SUBMISSION_AUTH_FAILURE_DELAY") or 1.0),
            throttled_limit=int(env.get("SUBMISSION_THROTTLED_LIMIT") or 3),
        )


class SubmissionService(SmtpService):
    """What every submission connection of one gateway shares (ports 587 and 465 together)."""

    def __init__(self, limits: SmtpLimits | None = None, settings: SubmissionSettings | None = None) -> None:
        super().__init__(limits)
        self.settings = settings or SubmissionSettings.from_env()


def submission_dedup_key(user: str, sender: str, content_sha256: str) -> str:
    """A client that retries (no 250 seen) sends the same bytes again: the same key, so the
    SubmitFunction delivers and queues once (DESIGN.md contract 3). Our trace fields are
    not part of it: they differ on every attempt."""
    return hashlib.sha256(f"submit\0{user}\0{sender}\0{content_sha256}".encode()).hexdigest()


_FROM = re.compile(r"FROM:[ \t]*", re.IGNORECASE)


def drop_auth_parameter(argument: str) -> str:
    """RFC 4954 §5: ``MAIL FROM:<path> AUTH=<mailbox>`` (or ``AUTH=<>``) is accepted and dropped.

    The parameter asserts who originally submitted a message a relay passes on; here the
    submitter is the authenticated user, whatever a client asserts, and the message
    leaves with no such claim (RFC 4954 §5: a server that does not trust it treats it as
    ``<>``). A malformed value is a syntax error (501 5.5.4).
    """
    prefix = _FROM.match(argument)
    if prefix is None:
        return argument
    try:
        _, rest = parse_reverse_path(argument[prefix.end() :])
    except GrammarError:
        return argument  # the MAIL handler reports it
    words = rest.split()
    kept = [w for w in words if w.partition("=")[0].upper() != "AUTH"]
    if len(kept) == len(words):
        return argument
    for word in words:
        key, _, value = word.partition("=")
        if key.upper() == "AUTH" and value != "<>":
            decode_xtext(value)  # RFC 4954 §5: AUTH=xtext
    head = argument[: len(argument) - len(rest)]
    return head + "".join(f" {w}" for w in kept)


class SubmissionProtocol(SmtpProtocol):
    """One submission connection: :class:`SmtpProtocol` with AUTH and the MSA's rules."""

    requires_login = True

    def __init__(self, conn: Connection, service: SubmissionService) -> None:
        super().__init__(conn, service)
        self.settings = service.settings
        #: The authenticated user (RFC 4954 §4: once per session; kept across EHLO and RSET).
        self.principal: str | None = None
        #: AUTH commands the throttle refused in this session.
        self.throttled = 0

    # -- the loop: SASL exchanges ----------------------------------------------------------

    async def respond(self, reply: Reply | None) -> bool:
        """A 334 challenge is written, and the client's response line read and handed
        on, until the exchange ends in a final reply (RFC 4954 §4)."""
        while isinstance(reply, Challenge):
            await self.send(reply)
            reply = await self.sasl_response(reply)
        return await super().respond(reply)

    async def sasl_response(self, sent: Challenge) -> Reply | None:
        """Read one client response to ``sent``; None when the client is gone."""
        assert sent.continuation is not None
        try:
            async with asyncio.timeout(self.command_wait()):
                line = await read_line(self.conn.reader, SASL_LINE_LIMIT, self.limits.min_rate)
        except TimeoutError as error:
            return self.timed_out(error)
        except LineTooLong:
            return S500_LINE_TOO_LONG  # RFC 4954 §6: 5.5.6
        except ConnectionClosed:
            return None
        if line.strip(b" \t") == b"*":
            return S501_CANCELLED  # RFC 4954 §4: "*" cancels, the server MUST answer 501
        try:
            return await sent.continuation(decode_response(line))
        except SaslError as error:
            return await self._failed(error.reply)

    # -- handlers ----------------------------------------------------------------------------

    async def cmd_ehlo(self, argument: str) -> Reply:
        """RFC 4954 §3: AUTH with its mechanisms, only once TLS is active (RFC 4954 §4:
        no plaintext password mechanism without TLS; RFC 8314 §3)."""
        ehlo = await super().cmd_ehlo(argument)
        if not self.conn.secure:
            return ehlo
        return ehlo.with_text(*ehlo.lines, f"AUTH {' '.join(MECHANISMS)}")

    async def cmd_auth(self, argument: str) -> Reply:
        """RFC 4954 §4 ``AUTH mechanism [initial-response]``; legal after EHLO and outside a
        transaction (the command table), over TLS, once per session."""
        if not self.conn.secure:
            return S530_STARTTLS_FIRST  # RFC 4954 §4, RFC 3207 §4
        if not self.session.esmtp:
            return S503_EHLO_FIRST  # AUTH is an extension: RFC 5321 §4.1.1.1, RFC 4954 §3
        if self.principal is not None:
            return S503_ALREADY_AUTHENTICATED  # RFC 4954 §4
        try:
            command = parse_auth_command(argument)
            mechanism = MECHANISMS[command.mechanism]()
            return await self._step(command.mechanism, mechanism, mechanism.begin(command.initial_response))
        except SaslError as error:
            return await self._failed(error.reply)

    async def _step(self, name: str, mechanism: Mechanism, step: Step) -> Reply:
        if isinstance(step, bytes):

            async def go_on(response: bytes) -> Reply:
                return await self._step(name, mechanism, mechanism.respond(response))

            return challenge(step, go_on)
        return await self._login(name, step)

    async def _login(self, mechanism: str, credentials: Credentials) -> Reply:
        """The AuthFunction checks the credentials; the user is who it says."""
        try:
            result = await authenticate(self.conn, credentials.username, credentials.password)
        except TemporaryFailure as failure:
            log.warning(
                "smtp %s: AUTH %s: temporary failure (ref %s)",
                self.session.session_id,
                mechanism,
                failure.correlation_id,
            )
            return S454_TEMPORARY  # RFC 4954 §6
        principal = result.principal
        authzid = credentials.authzid.lower()
        if result.throttled:
            log.info("smtp %s: AUTH %s refused by the throttle", self.session.session_id, mechanism)
            return await self._throttled()
        # RFC 4616 §2: an authorization identity other than the user's own is refused.
        if not principal or (authzid and authzid not in {credentials.username.lower(), principal.lower()}):
            log.info("smtp %s: AUTH %s failed", self.session.session_id, mechanism)  # no name, no password
            return await self._failed(S535_FAILED, result.delay)
        self.principal = principal
        log.info("smtp %s: AUTH %s succeeded: %s", self.session.session_id, mechanism, principal)
        return S235_AUTHENTICATED

    async def _failed(self, refusal: Reply, delay: float = 0.0) -> Reply:
        """Wrong credentials are answered late (a guesser's rate; ``delay``: the
        AuthFunction's, when longer than ours); other refusals at once."""
        if refusal is S535_FAILED:
            await pause(self.conn, self.settings.auth_failure_delay, delay)
        return refusal

    async def _throttled(self) -> Reply:
        """RFC 4954 §6: 454 4.7.0 for a try the throttle refused; a client that keeps
        trying in the same session is told 421 4.7.0 and disconnected (RFC 5321 §3.8)."""
        self.throttled += 1
        await pause(self.conn, self.settings.auth_failure_delay)
        if self.throttled >= self.settings.throttled_limit:
            return S421_AUTH_THROTTLED
        return S454_THROTTLED

    async def cmd_mail(self, argument: str) -> Reply:
        """RFC 5321 §4.1.1.2 after TLS (RFC 3207 §4) and AUTH (RFC 4954 §6); the AUTH=
        parameter is dropped (RFC 4954 §5)."""
        if not self.conn.secure:
            return S530_STARTTLS_FIRST
        if self.principal is None:
            return S530_AUTH_REQUIRED
        mail = await super().cmd_mail(drop_auth_parameter(argument))
        transaction = self.session.transaction
        if mail.code == 250 and transaction is not None and transaction.reverse_path is not None:
            path = transaction.reverse_path
            if path.literal or not is_dot_string(path.unquoted_local_part):
                # RFC 6409 §6.1: no user owns an address-literal or quoted-string mailbox.
                await self.abort_transaction()
                return S553_NOT_OWNED
        return mail

    async def check_recipient(self, command: RcptCommand) -> Verdict:
        """RFC 6409 §4.3: an authenticated user may send anywhere; in our domains the
        mailbox must exist (550 5.1.1). One ``resolve`` (cached by the function), none for
        a domain the gateway knows is not ours (gateway/smtp/recipients.py)."""
        if command.postmaster:
            return await super().check_recipient(command)  # <Postmaster>: ours (RFC 5321 §4.1.1.3)
        mailbox = command.forward_path
        local = mailbox.unquoted_local_part
        if mailbox.literal or not is_dot_string(local):
            return Verdict(S553_UNSUPPORTED_RECIPIENT)
        result = await resolve(self.conn.functions, f"{local}@{mailbox.domain}", self.conn.services.get(FOREIGN))
        if not result.get("ok"):
            return Verdict(replies.S501_BAD_RECIPIENT)
        if result.get("local_domain") and not result.get("deliverable"):
            return Verdict(replies.S550_NO_SUCH_USER)
        return Verdict(replies.S250_RECIPIENT_OK, str(result["recipient"]))

    # -- the message ------------------------------------------------------------------------

    def trace_fields(self, transaction: Transaction) -> str:
        """Our Received line alone (RFC 5321 §4.4: Return-Path is final delivery's), WITH
        ESMTPSA or UTF8SMTPSA for an authenticated session (RFC 3848 §2, RFC 6531 §4.3)."""
        info = self.trace_info(transaction)
        keyword = protocol(info.esmtp, info.smtputf8, info.tls is not None)
        return received(info).replace(f" with {keyword} id ", f" with {keyword}A id ", 1)

    def delivery_request(
        self, transaction: Transaction, sink: MessageSink, staged: StagedObject
    ) -> tuple[str, Request]:
        assert self.principal is not None  # MAIL needs AUTH
        recipients = transaction.recipients
        return SUBMIT_FUNCTION, Submit(
            user=self.principal,
            sender=transaction.sender,
            recipients=[r.address for r in recipients],
            staging_key=staged.key,
            message=base64.b64encode(staged.data).decode("ascii") if staged.data is not None else "",
            dedup_key=submission_dedup_key(self.principal, transaction.sender, sink.sha256),
            ret=transaction.parameters.ret,
            envid=transaction.parameters.envid,
            notify=[",".join(r.notify) for r in recipients],
            orcpt=[r.orcpt for r in recipients],
        )

    def refusal(self, result: dict[str, Any]) -> Reply:
        error = result.get("error")
        if error == "NOPERM":
            return S553_NOT_OWNED  # RFC 6409 §6.1
        if error == "CLIENTBUG":
            return S501_UNUSABLE_SENDER  # the one envelope part the function parses itself
        return replies.S554_TRANSACTION_FAILED


def _submission(method: Callable[[SubmissionProtocol, str], Awaitable[Reply]]) -> Handler:
    async def handler(session: SmtpProtocol, argument: str) -> Reply:
        assert isinstance(session, SubmissionProtocol)
        return await method(session, argument)

    return handler


_IN_TRANSACTION = (State.MAIL, State.RCPT, State.CHUNKING)

#: The MX role's table, with EHLO advertising AUTH, MAIL needing it, and AUTH itself:
#: after EHLO/HELO, never within a transaction (RFC 4954 §4: 503).
SUBMISSION_COMMANDS: dict[str, CommandSpec] = {
    **COMMANDS,
    "EHLO": replace(COMMANDS["EHLO"], handler=_submission(SubmissionProtocol.cmd_ehlo)),
    "MAIL": replace(COMMANDS["MAIL"], handler=_submission(SubmissionProtocol.cmd_mail)),
    "AUTH": CommandSpec(
        _submission(SubmissionProtocol.cmd_auth),
        frozenset({State.READY}),
        {State.INITIAL: replies.S503_SEND_HELO_FIRST, **dict.fromkeys(_IN_TRANSACTION, S503_IN_TRANSACTION)},
    ),
}
SubmissionProtocol.commands = SUBMISSION_COMMANDS


async def serve(conn: Connection) -> None:
    """The ``submission`` (587) and ``submissions`` (465) listeners' entry point
    (gateway.server.protocols); the gateway has already wrapped 465 in TLS.

    ``services["submission"]`` holds the :class:`SubmissionService` both share (tests may
    give one with small limits); without one, the first connection makes it.
    """
    service = conn.services.get("submission")
    if not isinstance(service, SubmissionService):
        service = conn.services["submission"] = SubmissionService()
    await SubmissionProtocol(conn, service).run()
