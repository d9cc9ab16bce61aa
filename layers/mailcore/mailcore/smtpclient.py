"""The SMTP client of the relay: one message to the recipients of one domain (RFC 5321).

:func:`deliver` walks the MX hosts in order (RFC 5321 §5.1) and each host's addresses,
and answers a :class:`RecipientResult` per recipient: delivered (2.x.x), failed for good
(5.x.x) or to be retried (4.x.x). The next host is tried when a connection cannot be
made or fails before the transaction, and when the server greets or answers EHLO with a
failure; once a server has answered MAIL, its answers are the domain's.

- EHLO with our host name, HELO when EHLO is refused (RFC 5321 §3.2, §4.1.4);
- STARTTLS whenever offered, without certificate checks: opportunistic security (RFC
  7435 §1.3); a failed handshake falls back to plain text on a new connection (§3);
- PIPELINING (RFC 2920 §3.1): MAIL and all RCPTs in one write when offered;
- SIZE (RFC 1870), 8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531), DSN (RFC 3461) parameters
  when the server offers them;
- timeouts per command as RFC 5321 §4.5.3.2 gives them, never past the caller's deadline;
- one session for many transactions (RFC 5321 §3.3), when the caller keeps a
  :class:`Sessions`: the relay's records of one batch for the same server address go over
  one connection, one TLS handshake and one EHLO.

stdlib ``smtplib`` does the I/O; this module decides what to send and what replies mean.
"""

from __future__ import annotations

import contextlib
import functools
import re
import smtplib
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from mailcore.mx import MxResolver, MxResult

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")
#: RFC 5321 §4.5.3.2: a "TCP SEND" of the data is timed per block of this size.
DATA_BLOCK = 64 * 1024


@dataclass(frozen=True)
class Timeouts:
    """RFC 5321 §4.5.3.2, in seconds (connect: Postfix's ``smtp_connect_timeout``)."""

    connect: float = 30
    greeting: float = 300  # §4.5.3.2.1 initial 220 message: 5 minutes
    command: float = 300  # §4.5.3.2.2 MAIL, §4.5.3.2.3 RCPT: 5 minutes (EHLO, STARTTLS alike)
    data_init: float = 120  # §4.5.3.2.4 DATA initiation: 2 minutes
    data_block: float = 180  # §4.5.3.2.5 data block: 3 minutes
    data_end: float = 600  # §4.5.3.2.6 DATA termination: 10 minutes


@dataclass(frozen=True)
class ClientConfig:
    hostname: str
    port: int = 25
    timeouts: Timeouts = field(default_factory=Timeouts)
    #: ``time.monotonic()`` by which the client must be done (the Lambda's remaining time).
    deadline: float | None = None
    starttls: bool = True


@dataclass(frozen=True)
class Envelope:
    sender: str
    recipients: Sequence[str]
    data: bytes
    #: RFC 3461 parameters: RET, ENVID of MAIL; per recipient NOTIFY and ORCPT ("" = none).
    ret: str = ""
    envid: str = ""
    notify: Sequence[str] = ()
    orcpt: Sequence[str] = ()


@dataclass(frozen=True)
class Reply:
    code: int
    text: str

    @property
    def enhanced(self) -> str:
        """The RFC 2034 enhanced status code at the start of the text, if it fits the code's class."""
        match = _ENHANCED.match(self.text)
        if match and match.group(1) == str(self.code)[0]:
            return ".".join(match.groups())
        return ""

    @property
    def status(self) -> str:
        return self.enhanced or f"{self.code // 100}.0.0"

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


@dataclass(frozen=True)
class RecipientResult:
    """What became of one recipient. ``diagnostic_type`` "smtp" means ``diagnostic`` is the
    server's reply (RFC 3464 §2.3.6 Diagnostic-Code); otherwise it is our own account."""

    recipient: str
    status: str
    diagnostic: str
    diagnostic_type: str = "smtp"
    remote_mta: str = ""

    @property
    def delivered(self) -> bool:
        return self.status.startswith("2")

    @property
    def permanent(self) -> bool:
        return self.status.startswith("5")

    @property
    def temporary(self) -> bool:
        return self.status.startswith("4")


@dataclass(frozen=True)
class Attempt:
    results: list[RecipientResult]
    #: host[address] of the server that answered the transaction ("" if none did).
    server: str = ""
    tls: bool = False
    #: That server offered DSN (RFC 3461 §4): it took the NOTIFY requests along, and
    #: success notices are its to send from here (§5.2.2).
    dsn: bool = False


class _NextHost(Exception):
    """This server cannot take the message now; try the next one."""

    def __init__(self, status: str, text: str, permanent_lookup: bool = False) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.permanent_lookup = permanent_lookup


class _TlsFailed(Exception):
    """The STARTTLS handshake failed: the connection is unusable."""


class _OutOfTime(Exception):
    """The caller's deadline has passed (not an OSError: no socket call failed)."""


class _Client(smtplib.SMTP):
    """smtplib.SMTP connecting to one address while it knows the server by its host name (SNI)."""

    def __init__(self, address: str, hostname: str, connect_timeout: float, first_reply_timeout: float) -> None:
        self._address = address
        self._first_reply_timeout = first_reply_timeout
        # local_hostname given: smtplib would otherwise ask DNS for our own name.
        super().__init__(local_hostname=hostname, timeout=connect_timeout)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        self._host = host  # STARTTLS sends it as the server name (SNI)
        sock = socket.create_connection((self._address, port), timeout)
        sock.settimeout(self._first_reply_timeout)  # RFC 5321 §4.5.3.2.1
        return sock


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One client context per container (building one loads the CA store: ~25 ms).

    RFC 7435 §1.3 opportunistic security: encrypt when we can, authenticate nothing; a
    certificate that fails verification is better than plain text.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _xtext(value: str) -> str:
    """RFC 3461 §4 xtext: "+" and characters outside "!".."~" (and "=") as +XX."""
    return "".join(c if "!" <= c <= "~" and c not in "+=" else "".join(f"+{b:02X}" for b in c.encode()) for c in value)


def _needs_smtputf8(envelope: Envelope) -> bool:
    """UTF-8 in the envelope: only an SMTPUTF8 server can take it (RFC 6531 §3.2)."""
    return any(not a.isascii() for a in [envelope.sender, *envelope.recipients])


def _utf8_header(envelope: Envelope) -> bool:
    header_end = envelope.data.find(b"\r\n\r\n")
    return not (envelope.data if header_end < 0 else envelope.data[:header_end]).isascii()


def _dot_stuffed(data: bytes) -> bytes:
    """RFC 5321 §4.5.2 transparency, CRLF line ends, and the terminating "." line."""
    data = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return re.sub(rb"(?m)^\.", b"..", data) + b".\r\n"


class _Session:
    """One connection to one address of one MX host."""

    def __init__(self, host: str, address: str, config: ClientConfig) -> None:
        self.host = host
        self.address = address
        self.config = config
        self.server = f"{host}[{address}]"
        self.smtp: _Client | None = None
        self.tls = False
        #: Transactions completed on this connection; after one, the next MAIL may follow
        #: (RFC 5321 §3.3) if the last ended with the final reply to the data (``ready``).
        self.transactions = 0
        self.ready = False

    def rename(self, host: str, config: ClientConfig) -> None:
        """This connection, reused for another MX host name on the same address."""
        self.host, self.config, self.server = host, config, f"{host}[{self.address}]"

    def _timeout(self, phase: float) -> float:
        if self.config.deadline is None:
            return phase
        left = self.config.deadline - time.monotonic()
        if left <= 0:
            raise _OutOfTime()
        return min(phase, left)

    def _set_timeout(self, phase: float) -> None:
        assert self.smtp is not None and self.smtp.sock is not None
        self.smtp.sock.settimeout(self._timeout(phase))

    def _reply(self) -> Reply:
        assert self.smtp is not None
        code, text = self.smtp.getreply()
        return Reply(code, text.decode("utf-8", "replace").replace("\n", " "))

    def _command(self, line: str, timeout: float) -> Reply:
        assert self.smtp is not None
        self._set_timeout(timeout)
        self.smtp.send(line.encode("utf-8") + b"\r\n")
        return self._reply()

    def open(self, use_tls: bool) -> None:
        """Connect, read the greeting, EHLO (or HELO), STARTTLS: or raise _NextHost / _TlsFailed."""
        t = self.config.timeouts
        connect_timeout, greeting_timeout = self._timeout(t.connect), self._timeout(t.greeting)
        try:
            self.smtp = _Client(self.address, self.config.hostname, connect_timeout, greeting_timeout)
            code, text = self.smtp.connect(self.host, self.config.port)
        except (OSError, smtplib.SMTPException) as error:
            raise _NextHost("4.4.1", f"connect to {self.server}:{self.config.port}: {error or type(error).__name__}") from None
        if code != 220:
            # RFC 5321 §3.1 / §5.1: a server that will not talk now; try the next one.
            reply = Reply(code, text.decode("utf-8", "replace"))
            self.close()
            raise _NextHost(reply.status if code // 100 == 4 else "4.4.1", f"{self.server} greeted: {reply}")
        self._hello()
        if use_tls and self.config.starttls and self.smtp.has_extn("starttls"):
            self._set_timeout(t.command)
            try:
                code, _ = self.smtp.starttls(context=_tls_context())
            except (OSError, ValueError, smtplib.SMTPException) as error:  # ssl.SSLError is an OSError
                self.close()
                raise _TlsFailed(str(error)) from None
            if code == 220:
                self.tls = True
                self._hello()  # RFC 3207 §4.2: forget what was learnt before TLS
            # else (454 TLS not available): RFC 7435 §3, go on without it

    def _hello(self) -> None:
        assert self.smtp is not None
        self._set_timeout(self.config.timeouts.command)
        try:
            code, text = self.smtp.ehlo(self.config.hostname)
            if code // 100 == 5:
                code, text = self.smtp.helo(self.config.hostname)  # RFC 5321 §3.2
        except (OSError, smtplib.SMTPException) as error:
            self.close()
            raise _NextHost("4.4.2", f"{self.server} lost during EHLO: {error or type(error).__name__}") from None
        if code != 250:
            reply = Reply(code, text.decode("utf-8", "replace"))
            self.close()
            raise _NextHost(reply.status if code // 100 == 4 else "4.4.1", f"{self.server} refused EHLO: {reply}")

    def _mail_parameters(self, envelope: Envelope) -> list[str] | RecipientResult:
        assert self.smtp is not None
        params: list[str] = []
        features = self.smtp.esmtp_features
        size = len(envelope.data)
        if "size" in features:
            limit = features["size"].strip()
            if limit.isdigit() and 0 < int(limit) < size:
                # RFC 1870 §6.1: the client must not send it; RFC 3463 X.3.4 message too big.
                return RecipientResult("", "5.3.4", f"message of {size} octets exceeds {self.host}'s limit of {limit}", "", self.host)
            params.append(f"SIZE={size}")
        if "8bitmime" in features and not envelope.data.isascii():
            params.append("BODY=8BITMIME")  # RFC 6152 §3
        # Deviation from RFC 6152 §3: 8-bit data to a server without 8BITMIME is sent as
        # it is rather than downgraded (which would break the DKIM signature).
        if _needs_smtputf8(envelope):
            if "smtputf8" not in features:
                # RFC 6531 §3.2: may not be sent to a server without SMTPUTF8; X.6.7.
                return RecipientResult("", "5.6.7", f"{self.host} does not support SMTPUTF8", "", self.host)
            params.append("SMTPUTF8")
        elif _utf8_header(envelope) and "smtputf8" in features:
            params.append("SMTPUTF8")
        # Deviation from RFC 6531 §3.2 (as Postfix): UTF-8 only in the header section goes
        # to a server without SMTPUTF8 as it is.
        if "dsn" in features:  # RFC 3461 §6.2: pass the parameters on
            if envelope.ret:
                params.append(f"RET={envelope.ret}")
            if envelope.envid:
                params.append(f"ENVID={_xtext(envelope.envid)}")
        return params

    def _rcpt_line(self, envelope: Envelope, i: int) -> str:
        assert self.smtp is not None
        line = f"RCPT TO:<{envelope.recipients[i]}>"
        if "dsn" in self.smtp.esmtp_features:
            notify = envelope.notify[i] if i < len(envelope.notify) else ""
            orcpt = envelope.orcpt[i] if i < len(envelope.orcpt) else ""
            if notify:
                line += f" NOTIFY={notify}"
            if orcpt:
                kind, _, address = orcpt.partition(";")
                line += f" ORCPT={kind};{_xtext(address)}"
        return line

    def transaction(self, envelope: Envelope) -> list[RecipientResult]:
        """MAIL, RCPT..., DATA: a result per recipient (RFC 5321 §3.3)."""
        assert self.smtp is not None
        t = self.config.timeouts
        parameters = self._mail_parameters(envelope)
        if isinstance(parameters, RecipientResult):
            return [RecipientResult(r, parameters.status, parameters.diagnostic, "", self.host) for r in envelope.recipients]
        self.ready = False
        mail = f"MAIL FROM:<{envelope.sender}>" + "".join(f" {p}" for p in parameters)
        rcpts = [self._rcpt_line(envelope, i) for i in range(len(envelope.recipients))]
        try:
            if self.smtp.has_extn("pipelining"):
                # RFC 2920 §3.1: MAIL and the RCPTs in one group, then the replies in order.
                self._set_timeout(t.command)
                self.smtp.send("".join(f"{line}\r\n" for line in [mail, *rcpts]).encode("utf-8"))
                mail_reply = self._reply()
                rcpt_replies = [self._reply() for _ in rcpts]
            else:
                mail_reply = self._command(mail, t.command)
                rcpt_replies = [self._command(line, t.command) for line in rcpts] if mail_reply.code == 250 else []
        except (OSError, smtplib.SMTPException) as error:
            # Nothing was accepted yet: as good as a failed connection.
            raise _NextHost("4.4.2", f"{self.server} lost before DATA: {error or type(error).__name__}") from None
        if mail_reply.code == 421 and self.transactions:
            # RFC 5321 §3.8: a reused connection the server is closing; nothing was accepted.
            raise _NextHost(mail_reply.status, f"{self.server} closing: {mail_reply}")
        if mail_reply.code != 250:
            return [self._result(r, mail_reply) for r in envelope.recipients]
        results = {r: self._result(r, reply) for r, reply in zip(envelope.recipients, rcpt_replies)}
        accepted = [r for r, reply in zip(envelope.recipients, rcpt_replies) if reply.code in (250, 251)]
        if not accepted:
            self._quietly("RSET")
            return list(results.values())
        final = self._data(envelope.data, accepted)
        return [final.get(r) or results[r] for r in envelope.recipients]

    def _data(self, data: bytes, accepted: list[str]) -> dict[str, RecipientResult]:
        assert self.smtp is not None and self.smtp.sock is not None
        t = self.config.timeouts
        try:
            reply = self._command("DATA", t.data_init)
            if reply.code != 354:
                return {r: self._result(r, reply) for r in accepted}
            payload = _dot_stuffed(data)
            for start in range(0, len(payload), DATA_BLOCK):
                self._set_timeout(t.data_block)
                self.smtp.sock.sendall(payload[start : start + DATA_BLOCK])
            self._set_timeout(t.data_end)
            reply = self._reply()
        except (OSError, smtplib.SMTPException) as error:
            # RFC 5321 §4.5.3.2.6: without the final reply we cannot know; try again
            # later (a duplicate is better than a loss, RFC 5321 §6.1).
            text = f"{self.server} lost during DATA: {error or type(error).__name__}"
            return {r: RecipientResult(r, "4.4.2", text, "", self.host) for r in accepted}
        self.transactions += 1
        self.ready = reply.code != 421  # RFC 5321 §3.8: 421, the server closes
        return {r: self._result(r, reply) for r in accepted}

    def _result(self, recipient: str, reply: Reply) -> RecipientResult:
        return RecipientResult(recipient, reply.status, str(reply), "smtp", self.host)

    def _quietly(self, command: str) -> None:
        with contextlib.suppress(OSError, smtplib.SMTPException):
            self._command(command, self.config.timeouts.command)

    def close(self) -> None:
        if self.smtp is None:
            return
        smtp, self.smtp = self.smtp, None
        try:
            if smtp.sock is not None:
                smtp.sock.settimeout(5)
                smtp.quit()
        except (OSError, smtplib.SMTPException):
            pass
        finally:
            smtp.close()


class Sessions:
    """Connections kept open between deliveries, one per server address and port, until
    :meth:`close` (the end of the relay's batch).

    RFC 5321 §3.3: a session may carry many mail transactions. Keyed by address, as
    Postfix's connection cache is: MX host names of several domains often lead to the
    same server. A kept connection the server has closed meanwhile costs a new one, not
    a failure (:func:`_attempt_address`).
    """

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], _Session] = {}

    def take(self, address: str, port: int) -> _Session | None:
        return self._idle.pop((address, port), None)

    def keep(self, session: _Session) -> None:
        old = self._idle.pop((session.address, session.config.port), None)
        if old is not None:
            old.close()
        self._idle[(session.address, session.config.port)] = session

    def close(self) -> None:
        """QUIT every kept connection."""
        idle, self._idle = list(self._idle.values()), {}
        for session in idle:
            session.close()


def _attempt_address(
    host: str, address: str, envelope: Envelope, config: ClientConfig, sessions: Sessions | None = None
) -> Attempt:
    kept = sessions.take(address, config.port) if sessions is not None else None
    if kept is not None:
        kept.rename(host, config)
        try:
            return _finish(kept, kept.transaction(envelope), sessions)
        except _NextHost:
            kept.close()  # closed by the server meanwhile, before MAIL was accepted: a new connection
        except BaseException:
            kept.close()
            raise
    session = _Session(host, address, config)
    try:
        try:
            session.open(use_tls=True)
        except _TlsFailed:
            # RFC 7435 §3: opportunistic; a failed handshake falls back to plain text.
            session = _Session(host, address, config)
            session.open(use_tls=False)
        return _finish(session, session.transaction(envelope), sessions)
    except BaseException:
        session.close()
        raise


def _finish(session: _Session, results: list[RecipientResult], sessions: Sessions | None) -> Attempt:
    """The attempt's outcome; the connection kept for the next transaction if it can take one."""
    dsn = session.smtp is not None and session.smtp.has_extn("dsn")
    attempt = Attempt(results, session.server, session.tls, dsn)
    if sessions is not None and session.ready:
        sessions.keep(session)
    else:
        session.close()
    return attempt


def deliver(
    envelope: Envelope, mx: MxResult, resolver: MxResolver, config: ClientConfig, sessions: Sessions | None = None
) -> Attempt:
    """Try the MX hosts of ``mx`` (which has hosts) in order until one answers the transaction;
    over a connection of ``sessions`` where one to the address is open."""
    failures: list[_NextHost] = []
    for host in mx.hosts:
        addresses = host.addresses
        if not addresses:
            found = resolver.addresses(host.host)
            if not found.addresses:
                failures.append(_NextHost("5.4.4" if found.permanent else "4.4.3", found.error, found.permanent))
                continue
            addresses = found.addresses
        for address in addresses:
            try:
                return _attempt_address(host.host, address, envelope, config, sessions)
            except _NextHost as failure:
                failures.append(failure)
            except _OutOfTime:
                # Whatever the server had of the transaction is lost with the connection.
                failures.append(_NextHost("4.4.2", "out of time for this attempt"))
                return _failed(envelope, failures)
    return _failed(envelope, failures)


def _failed(envelope: Envelope, failures: list[_NextHost]) -> Attempt:
    """No server answered. Permanent only if no MX host has an address (RFC 5321 §5.1
    "...MUST be reported as an error"); otherwise try again later, as Postfix does."""
    if failures and all(f.permanent_lookup for f in failures):
        status, text = "5.4.4", "; ".join(f.text for f in failures)
    else:
        last = failures[-1] if failures else _NextHost("4.4.1", "no MX host to try")
        status, text = last.status if last.status.startswith("4") else "4.4.1", last.text
    return Attempt([RecipientResult(r, status, text, "") for r in envelope.recipients])

