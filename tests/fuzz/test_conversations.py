"""One gateway, several hundred random and mutated lines per protocol over real sockets
(issue #7): every line gets a protocol reply or the connection is closed cleanly, no
session fails (no ``session failed`` ERROR with a traceback), and afterwards a fresh
client still logs in.

The client follows each protocol just far enough to stay in step: SMTP's 354 gets a
message and 334 the next line, an IMAP literal its octets, a POP3 multi-line reply is read
to its end; a reply that starts TLS (STARTTLS, STLS) or ends the session makes it
reconnect. The lines come from a fixed seed (printed on failure), so a failure repeats.
Each run connects from a loopback address of its own: the throttle's failure counters
for the fuzzer's wrong passwords are not the fresh client's (127.0.0.1).
"""

from __future__ import annotations

import base64
import logging
import random
import re
import socket
import ssl
import time
from collections.abc import Iterator

import pytest

from gateway.imap.settings import ImapSettings
from gateway.pop3 import grammar as pop3_grammar
from gateway.pop3.settings import Pop3Settings
from gateway.smtp.submission import SubmissionService, SubmissionSettings
from tests.integration.test_imap_support import deliver

from .corpus import IMAP_LINES, IMAP_TOKENS, POP3_LINES, POP3_TOKENS, SMTP_LINES, SMTP_TOKENS
from .mutations import mutate

PASSWORD = "correct horse"  # tests/integration/conftest.py's user
LINES = 300
SEED = 7
#: An IMAP literal a mutated line announces is cut to this size (the client sends it).
MAX_LITERAL = 2048
_LITERAL_AT_END = re.compile(rb"\{([0-9]{1,20})(\+?)\}$")
MESSAGE = b"From: a@example.org\r\nSubject: fuzz\r\n\r\nHello.\r\n"


@pytest.fixture(autouse=True)
def quick(gateway, monkeypatch) -> Iterator[None]:
    """No failure delays (the fuzzer fails logins all the time) on the session's gateway."""
    services = gateway.gateway.services
    monkeypatch.setitem(services, "submission", SubmissionService(settings=SubmissionSettings(0)))
    # A budget of bad commands that lets a connection live a while: each login costs a
    # password hash (about 0.4 s here), and the fuzzer logs in again after each close.
    monkeypatch.setitem(services, "pop3", Pop3Settings(auth_failure_delay=0, max_bad_commands=40))
    monkeypatch.setitem(services, "imap", ImapSettings(auth_failure_delay=0, poll_interval=0.25, max_bad_commands=40))
    monkeypatch.setitem(services, "sleep", _no_sleep)
    services.pop("imap.shared", None)
    yield
    services.pop("imap.shared", None)


async def _no_sleep(_seconds: float) -> None:
    return None


@pytest.fixture
def failures(caplog) -> Iterator[None]:
    caplog.set_level(logging.INFO, logger="gateway")
    yield
    crashes = [
        r for r in caplog.records if "session failed" in r.getMessage() or (r.name.startswith("gateway") and r.exc_info)
    ]
    assert not crashes, [r.getMessage() for r in crashes]


def fuzz_lines(seeds: list[bytes], tokens: list[bytes], rng: random.Random) -> Iterator[bytes]:
    """Mutated seed lines, one per line: CR and LF removed (one line each)."""
    for _ in range(LINES):
        line = mutate(rng, rng.choice(seeds), tokens, rng.choice((0, 0, 1, 1, 2, 4)), max_size=1024)
        yield line.replace(b"\r", b"").replace(b"\n", b"")


class Client:
    def __init__(self, gateway, listener: str, source: str, tls: bool = False) -> None:
        sock = socket.create_connection(gateway.address(listener), timeout=20, source_address=(source, 0))
        if tls:
            context = ssl.create_default_context(cafile=str(gateway.cert_file))
            context.check_hostname = False
            sock = context.wrap_socket(sock)
        self.sock = sock
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes | None:
        """The next line, or None at EOF (a reset counts as EOF: the server closed)."""
        while b"\r\n" not in self.buffer:
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                chunk = b""
            if not chunk:
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def exactly(self, size: int) -> bytes | None:
        while len(self.buffer) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def close(self) -> None:
        self.sock.close()


def loopback_source(rng: random.Random) -> str:
    return f"127.{rng.randrange(1, 255)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


# -- SMTP ----------------------------------------------------------------------------------


def smtp_reply(client: Client) -> bytes | None:
    """The last line of one reply, each line checked (RFC 5321 §4.2); None at EOF."""
    while True:
        line = client.line()
        if line is None:
            return None
        assert re.match(rb"[2-5][0-9]{2}([ -]|$)", line), line
        if line[3:4] != b"-":
            return line


def smtp_connect(gateway, user: str, source: str, rng: random.Random) -> Client:
    """Port 25 or 465 (TLS, AUTH offered), greeted, EHLO said; on 465 logged in half the time."""
    submission = rng.random() < 0.5
    client = Client(gateway, "submissions" if submission else "smtp", source, tls=submission)
    assert (smtp_reply(client) or b"").startswith(b"220")
    client.send(b"EHLO fuzz.example\r\n")
    assert (smtp_reply(client) or b"").startswith(b"250")
    if submission and rng.random() < 0.5:
        client.send(b"AUTH PLAIN " + base64.b64encode(f"\0{user}\0{PASSWORD}".encode()) + b"\r\n")
        smtp_reply(client)
    return client


def test_smtp_conversation(gateway, user, failures) -> None:
    rng = random.Random(SEED)
    source = loopback_source(rng)
    client = smtp_connect(gateway, user, source, rng)
    for line in fuzz_lines(
        [*SMTP_LINES, f"MAIL FROM:<{user}>".encode(), f"RCPT TO:<{user}>".encode()], SMTP_TOKENS, rng
    ):
        if line.lstrip()[:4].upper() == b"BDAT":
            continue  # its chunk follows unannounced: the parser fuzz covers BDAT
        try:
            client.send(line + b"\r\n")
            reply = smtp_reply(client)
            while reply is not None and reply[:3] in (b"334", b"354"):
                client.send(b"=\r\n" if reply[:3] == b"334" else MESSAGE + b".\r\n")
                reply = smtp_reply(client)
        except (BrokenPipeError, ConnectionResetError):
            reply = None
        if reply is None or reply[:3] in (b"221", b"421") or (reply[:3] == b"220"):  # closed, or TLS to start
            client.close()
            client = smtp_connect(gateway, user, source, rng)
    client.close()
    fresh = smtp_connect(gateway, user, "127.0.0.1", random.Random(0))  # rng(0) picks 465 and AUTH
    fresh.send(b"NOOP\r\n")
    assert smtp_reply(fresh) == b"250 2.0.0 Ok"
    fresh.close()
    check_login_smtp(gateway, user)


def check_login_smtp(gateway, user: str) -> None:
    client = Client(gateway, "submissions", "127.0.0.1", tls=True)
    smtp_reply(client)
    client.send(b"EHLO fresh.example\r\n")
    smtp_reply(client)
    client.send(b"AUTH PLAIN " + base64.b64encode(f"\0{user}\0{PASSWORD}".encode()) + b"\r\n")
    assert (smtp_reply(client) or b"").startswith(b"235")
    client.close()


# -- IMAP ----------------------------------------------------------------------------------


def imap_response(client: Client) -> bytes | None:
    """Lines up to a tagged status, a ``* BAD`` for a line without a tag, or a ``+``
    continuation; literals in untagged data are read whole. None at EOF."""
    while True:
        line = client.line()
        if line is None:
            return None
        literal = _LITERAL_AT_END.search(line)
        while literal is not None and line.startswith(b"* "):
            if client.exactly(int(literal[1])) is None:
                return None
            rest = client.line()
            if rest is None:
                return None
            line, literal = rest, _LITERAL_AT_END.search(rest)
        if line.startswith(b"+"):
            return line
        if line.startswith(b"* BAD") or line.startswith(b"* BYE"):
            if line.startswith(b"* BAD"):
                return line
            continue
        if line.startswith(b"* "):
            continue
        _tag, _, rest = line.partition(b" ")
        assert rest[:3] in (b"OK ", b"NO ", b"BAD") or rest in (b"OK", b"NO", b"BAD"), line
        return line


def imap_connect(gateway, user: str, source: str, rng: random.Random) -> Client:
    client = Client(gateway, "imap", source)
    assert (client.line() or b"").startswith(b"* OK")
    if rng.random() < 0.85:  # most commands need a login
        client.send(f'l LOGIN {user} "{PASSWORD}"\r\n'.encode())
        imap_response(client)
        client.send(b"s SELECT INBOX\r\n")
        imap_response(client)
    return client


def imap_send(client: Client, line: bytes, rng: random.Random) -> bytes | None:
    """Send one line; a literal it announces gets its octets (after ``+`` when synchronizing)."""
    literal = _LITERAL_AT_END.search(line)
    if literal is not None and int(literal[1]) > MAX_LITERAL:
        line = line[: literal.start()] + b"{%d%s}" % (int(literal[1]) % MAX_LITERAL, literal[2])
        literal = _LITERAL_AT_END.search(line)
    client.send(line + b"\r\n")
    if literal is None:
        return imap_response(client)
    octets = bytes(rng.randrange(256) for _ in range(int(literal[1])))
    if literal[2] == b"+":  # RFC 7888: sent at once; the command line goes on after it
        client.send(octets + b"\r\n")
        return imap_response(client)
    response = imap_response(client)
    if response is not None and response.startswith(b"+"):
        client.send(octets + b"\r\n")
        return imap_response(client)
    return response


def test_imap_conversation(gateway, store, function_transport, user, failures) -> None:
    deliver(store, function_transport, user, MESSAGE)
    rng = random.Random(SEED)
    source = loopback_source(rng)
    client = imap_connect(gateway, user, source, rng)
    for line in fuzz_lines(IMAP_LINES, IMAP_TOKENS, rng):
        try:
            response = imap_send(client, line, rng)
        except (BrokenPipeError, ConnectionResetError):
            response = None
        if response is None or re.match(rb"\S+ OK \[?.*(Begin TLS|STARTTLS)", response) or b"LOGOUT" in response:
            client.close()
            client = imap_connect(gateway, user, source, rng)
    client.close()
    fresh = Client(gateway, "imap", "127.0.0.1")
    fresh.line()
    fresh.send(f'a LOGIN {user} "{PASSWORD}"\r\nb SELECT INBOX\r\n'.encode())
    assert (imap_response(fresh) or b"").startswith(b"a OK")
    assert (imap_response(fresh) or b"").startswith(b"b OK")
    fresh.close()


# -- POP3 ----------------------------------------------------------------------------------


def pop3_multiline(line: bytes) -> bool:
    """Whether ``+OK`` to this command line is followed by lines and ".", as the server
    decides it (gateway/pop3/session.py)."""
    try:
        command = pop3_grammar.parse_command(line)
    except Exception:
        return False
    bare = not command.arg.strip(" ")
    return command.verb in ("CAPA", "RETR", "TOP") or (command.verb in ("LIST", "UIDL", "AUTH") and bare)


def pop3_reply(client: Client, line: bytes) -> bytes | None:
    status = client.line()
    if status is None:
        return None
    assert status.startswith((b"+OK", b"-ERR", b"+ ")) or status == b"+", status
    if status.startswith(b"+OK") and len(line) <= pop3_grammar.COMMAND_LINE_LIMIT and pop3_multiline(line):
        while (body := client.line()) != b".":
            if body is None:
                return None
    return status


def pop3_connect(gateway, user: str, source: str, rng: random.Random) -> Client:
    client = Client(gateway, "pop3", source)
    assert (client.line() or b"").startswith(b"+OK")
    if rng.random() < 0.6:
        client.send(f"USER {user}\r\nPASS {PASSWORD}\r\n".encode())
        client.line()
        client.line()  # +OK, or -ERR [IN-USE] while the last session's lease is released
    return client


def test_pop3_conversation(gateway, store, user, function_transport, failures) -> None:
    deliver(store, function_transport, user, MESSAGE)
    rng = random.Random(SEED)
    source = loopback_source(rng)
    client = pop3_connect(gateway, user, source, rng)
    continuation = False
    for line in fuzz_lines(POP3_LINES, POP3_TOKENS, rng):
        try:
            client.send(line + b"\r\n")
            reply = pop3_reply(client, b"" if continuation else line)
        except (BrokenPipeError, ConnectionResetError):
            reply = None
        continuation = (reply is not None and reply.startswith(b"+ ")) or reply == b"+"
        stls = reply is not None and reply.startswith(b"+OK Begin TLS")
        if reply is None or stls or (reply.startswith(b"+OK") and line.strip().upper() == b"QUIT"):
            client.close()
            client = pop3_connect(gateway, user, source, rng)
            continuation = False
    client.close()
    deadline = time.monotonic() + 10
    while True:  # the last session's lease is released as it ends
        fresh = Client(gateway, "pop3", "127.0.0.1")
        fresh.line()
        fresh.send(f"USER {user}\r\nPASS {PASSWORD}\r\n".encode())
        fresh.line()
        reply = fresh.line() or b""
        fresh.close()
        if not reply.startswith(b"-ERR [IN-USE]") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert reply.startswith(b"+OK"), reply
