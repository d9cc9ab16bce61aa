"""curl's ``--haproxy-protocol`` (a PROXY protocol v1 header, as HAProxy and AWS's NLB
send) against a gateway whose every listener expects one (issue #7): IMAP in the clear,
IMAP and POP3 over implicit TLS (the header comes before the handshake), and SMTP
delivery; without the header curl's connection is dropped unanswered.

Needs ``curl``; skipped when it is not on PATH.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest

from gateway.config import LISTENERS
from tests.integration.test_smtp import inbox, split_trace
from tests.interop.test_curl_imap import account  # noqa: F401  (a user with three messages)
from tests.interop.test_mbsync import PASSWORD, Running, running_gateway

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed"),
]


@pytest.fixture(scope="module")
def proxied(local_stack, tmp_path_factory) -> Iterator[Running]:
    with running_gateway(local_stack, tmp_path_factory.mktemp("tls"), proxy_protocol=frozenset(LISTENERS)) as server:
        yield server


def curl(
    server: Running, listener: str, scheme: str, path: str, *extra: str, proxy: bool = True
) -> subprocess.CompletedProcess[str]:
    host, port = server.address(listener)
    args = ["curl", "--silent", "--show-error", "--max-time", "30", "--cacert", str(server.cert), "--insecure"]
    if proxy:
        args.append("--haproxy-protocol")
    return subprocess.run(
        [*args, *extra, f"{scheme}://{host}:{port}/{path}"], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(("listener", "scheme"), [("imap", "imap"), ("imaps", "imaps")])
def test_curl_lists_mailboxes_through_a_proxy_header(proxied, account, listener, scheme):  # noqa: F811
    result = curl(proxied, listener, scheme, "", "--user", f"{account}:{PASSWORD}")
    assert result.returncode == 0, result.stderr
    assert "INBOX" in result.stdout


def test_curl_retrieves_over_pop3s_through_a_proxy_header(proxied, account):  # noqa: F811
    result = curl(proxied, "pop3s", "pop3s", "1", "--user", f"{account}:{PASSWORD}")
    assert result.returncode == 0, result.stderr
    assert "Subject: hello curl" in result.stdout


def test_curl_delivers_over_smtp_through_a_proxy_header(proxied, store, account, tmp_path):  # noqa: F811
    message = tmp_path / "message.eml"
    message.write_bytes(
        b"From: sender@example.org\r\nTo: " + account.encode() + b"\r\nSubject: via proxy\r\n\r\nhello\r\n"
    )
    before = len(inbox(store, account))
    result = curl(
        proxied,
        "smtp",
        "smtp",
        "client.example",
        "--mail-from",
        "sender@example.org",
        "--mail-rcpt",
        account,
        "--upload-file",
        str(message),
    )
    assert result.returncode == 0, result.stderr
    stored = inbox(store, account)
    assert len(stored) == before + 1
    (delivered,) = [raw for raw in stored if b"Subject: via proxy" in raw]
    # The Received field names the client the header named (curl's own address here).
    assert b"[127.0.0.1]" in split_trace(delivered)[1]


def test_curl_without_the_header_is_dropped(proxied, account):  # noqa: F811
    result = curl(proxied, "imap", "imap", "", "--user", f"{account}:{PASSWORD}", proxy=False)
    assert result.returncode != 0
