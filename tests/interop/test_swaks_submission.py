"""Interop: swaks submits with AUTH over STARTTLS (587) and implicit TLS (465, RFC 8314);
the message then goes through the OutboundQueue and the RelayFunction to the loopback MX
(an aiosmtpd server on 127.0.0.21, found through the test DNS server), and to a local
recipient's INBOX.

swaks and its TLS support are Debian packages (``swaks``, ``libnet-ssleay-perl``).
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import function_transport, gateway, new_user  # noqa: F401  (fixtures)
from tests.integration.test_smtp import inbox
from tests.loopback import SINKS

# The loopback world (DNS server, remote MXs, the queue pump): tests/outbound.py.
pytest_plugins = ["tests.outbound"]

PASSWORD = "correct horse"


def _swaks_has_tls() -> bool:
    if shutil.which("swaks") is None:
        return False
    support = subprocess.run(["swaks", "--support"], capture_output=True, text=True)
    return re.search(r"^=== TLS supported", support.stdout + support.stderr, re.MULTILINE) is not None


pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not _swaks_has_tls(), reason="swaks with TLS is not installed (swaks, libnet-ssleay-perl)"),
]

#: (listener, swaks's TLS option, SASL mechanism)
WAYS = [
    pytest.param("submission", "--tls", "PLAIN", id="587-STARTTLS-PLAIN"),
    pytest.param("submissions", "--tlsc", "PLAIN", id="465-implicit-TLS-PLAIN"),
    pytest.param("submission", "--tls", "LOGIN", id="587-STARTTLS-LOGIN"),
]


def swaks(gateway, listener: str, tls: str, mechanism: str, user: str, to: str, data: Path) -> str:  # noqa: F811
    host, port = gateway.address(listener)
    command = [
        "swaks", "--server", host, "--port", str(port), "--helo", "swaks.example", tls,
        "--auth", mechanism, "--auth-user", user, "--auth-password", PASSWORD,
        "--from", user, "--to", to, "--data", f"@{data}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, timeout=120)
    transcript = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0, transcript[-3000:]
    return transcript


def data_file(tmp_path: Path, user: str, to: str) -> tuple[Path, str]:
    subject = f"swaks {secrets.token_hex(4)}"
    path = tmp_path / "message.eml"
    path.write_bytes(f"From: <{user}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\r\nSent by swaks.\r\n".encode())
    return path, subject


@pytest.mark.parametrize(("listener", "tls", "mechanism"), WAYS)
def test_swaks_submits_to_a_remote_recipient(
    gateway,  # noqa: F811
    store,
    domain,
    dns_server,
    pump,
    relay_env,
    tmp_path,
    listener,
    tls,
    mechanism,
):
    user = new_user(store, domain)
    remote = f"r{secrets.token_hex(5)}.test"
    dns_server.zone.add(remote, "MX", f"10 mx.{remote}.")
    dns_server.zone.add(f"mx.{remote}", "A", SINKS[0])
    rcpt = f"friend@{remote}"
    data, subject = data_file(tmp_path, user, rcpt)
    transcript = swaks(gateway, listener, tls, mechanism, user, rcpt, data)
    assert re.search(r"<~ +235 2\.7\.0 ", transcript)  # authenticated, over TLS ("~")
    assert re.search(r"<~ +250 2\.0\.0 Ok: queued as \S+", transcript)
    if tls == "--tls":
        assert "STARTTLS" in transcript
    # the queue is pumped through the RelayFunction: the loopback MX has it, once
    assert pump.run() == 1
    (got,) = relay_env.received(rcpt)
    assert got.sender == user
    assert f"Subject: {subject}".encode() in got.data
    assert b"Message-ID: " in got.data  # RFC 6409 §8.3, added for swaks's message
    assert b" with ESMTPSA id " in got.data.split(b"\r\n\r\n", 1)[0]


def test_swaks_submits_to_a_local_recipient_over_implicit_tls(gateway, store, domain, tmp_path):  # noqa: F811
    user, to = new_user(store, domain), new_user(store, domain)
    data, subject = data_file(tmp_path, user, to)
    swaks(gateway, "submissions", "--tlsc", "PLAIN", user, to, data)
    (stored,) = inbox(store, to)
    assert stored.startswith(f"Return-Path: <{user}>\r\n".encode())
    assert f"Subject: {subject}".encode() in stored


def test_swaks_without_auth_is_refused(gateway, store, domain, tmp_path):  # noqa: F811
    user = new_user(store, domain)
    data, _ = data_file(tmp_path, user, "friend@example.net")
    host, port = gateway.address("submission")
    command = ["swaks", "--server", host, "--port", str(port), "--tls", "--from", user, "--to", "friend@example.net",
               "--data", f"@{data}"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, timeout=120)
    assert result.returncode != 0
    assert re.search(r"<~\* +530 5\.7\.0 Authentication required", result.stdout.decode(errors="replace"))
