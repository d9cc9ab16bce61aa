"""fetchmail collects a seeded maildrop over POP3 with deletion, as a user's cron job or a
relay host would (RFC 1939 with UIDL, TOP, STLS/implicit TLS as fetchmail negotiates them).

Needs the Debian package ``fetchmail``; skipped when it is not on PATH.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mailcore.contracts import Deliver
from mailcore.delivery import deliver
from mailcore.mailboxes import INBOX

from gateway.config import LISTENERS, GatewayConfig
from gateway.functions import FunctionClient, InProcessTransport
from gateway.pop3.settings import Pop3Settings
from gateway.server import Gateway

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("fetchmail") is None, reason="fetchmail is not installed"),
]
PASSWORD = "correct horse"


def seeded_messages(count: int) -> list[bytes]:
    """Varied messages: dotted lines, a long body, 8-bit text, a header-only message."""
    messages = []
    for n in range(count):
        token = secrets.token_hex(6)
        body = b"".join(b"%s line %d of message %d\r\n" % (b"." * (i % 3), i, n) for i in range(n * 40))
        messages.append(
            b"From: Sender <sender@example.org>\r\n"
            b"To: someone@example.test\r\n"
            b"Subject: fetchmail test %d " % n + token.encode() + b"\r\n"
            b"Message-ID: <" + token.encode() + b"@example.org>\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"\r\n" + body + "Grüße, ünïcødé\r\n.\r\n..\r\n".encode()
        )
    messages.append(b"From: header-only@example.org\r\nSubject: no body " + secrets.token_hex(4).encode() + b"\r\n")
    return messages


def deliver_all(store, user: str, messages: list[bytes]) -> None:
    for raw in messages:
        key = f"staging/interop-{secrets.token_hex(8)}"
        store.blobs.s3.put_object(Bucket=store.blobs.bucket, Key=key, Body=raw)
        deliver(store, Deliver(key, "sender@example.org", [user]))


def run_fetchmail(tmp_path: Path, poll: str, user: str, tls: str = "sslproto ''") -> subprocess.CompletedProcess[str]:
    """One fetchmail run: every message to a file of its own, CRs kept, no Received line."""
    out = tmp_path / "collected"
    out.mkdir()
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        "set no bouncemail\n"
        "set invisible\n"
        f"{poll}\n"
        f'  user "{user}" there with password "{PASSWORD}" is "{os.environ.get("USER", "root")}" here\n'
        f"  options nokeep fetchall no stripcr no rewrite {tls}\n"
        f"  mda \"/bin/sh -c 'cat > {out}/msg.$$'\"\n"
    )
    rc.chmod(0o600)
    env = {**os.environ, "HOME": str(tmp_path), "FETCHMAILHOME": str(tmp_path)}
    return subprocess.run(
        ["fetchmail", "--verbose", "--nodetach", "--nosyslog", "-f", str(rc), "--pidfile", str(tmp_path / "pid")],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )


def collected(tmp_path: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted((tmp_path / "collected").iterdir())]


# -- a gateway of this module's own (the integration suite's fixtures live in its conftest) --


@dataclass
class RunningGateway:
    gateway: Gateway
    cert_file: Path

    def address(self, listener: str) -> tuple[str, int]:
        return self.gateway.listening[listener]


@pytest.fixture(scope="module")
def gateway(local_stack, tmp_path_factory) -> Iterator[RunningGateway]:
    tls_dir = tmp_path_factory.mktemp("tls")
    config = GatewayConfig(
        ports={name: 0 for name in LISTENERS},
        hostname="mx.test.example",
        mail_bucket=local_stack.resources["MailBucket"],
    )
    gw = Gateway(config, FunctionClient(InProcessTransport(local_stack.functions)), tls_dir=tls_dir)
    gw.services["pop3"] = Pop3Settings(auth_failure_delay=0.05)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fetchmail-gateway", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(gw.start(), loop).result(timeout=30)
    yield RunningGateway(gw, tls_dir / "gateway-cert.pem")
    asyncio.run_coroutine_threadsafe(gw.stop(), loop).result(timeout=30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)


@pytest.fixture
def user(store, domain) -> str:
    return store.add_user(f"fetch{secrets.token_hex(4)}@{domain}", PASSWORD)


@pytest.mark.parametrize(
    "transport",
    [
        pytest.param("plain", id="plain-loopback"),
        pytest.param("stls", id="stls"),
        pytest.param("implicit", id="implicit-tls"),
    ],
)
def test_fetchmail_collects_everything_and_leaves_the_server_empty(gateway, store, user, tmp_path, transport):
    messages = seeded_messages(6)
    deliver_all(store, user, messages)
    host, port = gateway.address("pop3s" if transport == "implicit" else "pop3")
    poll = f"poll {host} with proto POP3 port {port} uidl"
    cert = f"sslcertfile '{gateway.cert_file}' sslcertck sslcommonname 'mx.test.example'"
    tls = {
        "plain": "sslproto ''",  # plaintext USER/PASS is allowed on loopback
        "stls": f"sslproto 'TLS1.2+' {cert}",  # STLS, the certificate checked
        "implicit": f"ssl {cert}",
    }[transport]
    result = run_fetchmail(tmp_path, poll, user, tls)
    assert result.returncode == 0, result.stdout + result.stderr
    dialogue = result.stdout + result.stderr
    assert ("POP3> STLS" in dialogue) is (transport == "stls")
    assert "POP3> CAPA" in dialogue and "POP3> UIDL" in dialogue and "POP3> QUIT" in dialogue
    # The bytes collected are the bytes sent (fetchmail was told not to add or rewrite);
    # fetchmail itself ends a header that had no body with the blank line.
    expected = [raw if b"\r\n\r\n" in raw else raw + b"\r\n" for raw in messages]
    assert sorted(collected(tmp_path)) == sorted(expected)
    # --nokeep: the server is left empty, in IMAP's view too.
    mailbox = store.mailboxes.get(user, INBOX)
    assert store.messages.list_range(mailbox.mailbox_id) == []
    assert mailbox.messages == 0


def test_fetchmail_reports_wrong_credentials(gateway, store, user, tmp_path):
    host, port = gateway.address("pop3")
    result = run_fetchmail(tmp_path, f"poll {host} with proto POP3 port {port}", user + "x")
    assert result.returncode == 3, result.stdout + result.stderr  # fetchmail's "authentication failed"
