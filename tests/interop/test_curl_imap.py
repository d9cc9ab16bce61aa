"""curl's imap:// and imaps:// URLs (RFC 5092 as curl implements it) list mailboxes,
fetch messages and search, against the gateway.

Needs ``curl``; skipped when it is not on PATH.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Iterator

import pytest
from mailcore.contracts import Append

from gateway.functions import InProcessTransport
from tests.interop.test_mbsync import PASSWORD, Running, running_gateway

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed"),
]


@pytest.fixture(scope="module")
def imap_server(local_stack, tmp_path_factory) -> Iterator[Running]:
    with running_gateway(local_stack, tmp_path_factory.mktemp("tls")) as server:
        yield server


@pytest.fixture
def account(local_stack, store, domain) -> str:
    transport = InProcessTransport(local_stack.functions)
    user = store.add_user(f"curl{secrets.token_hex(3)}@{domain}", PASSWORD)
    for n, subject in enumerate(["hello curl", "second one", "third"]):
        key = f"staging/curl-{secrets.token_hex(8)}"
        raw = f"From: a@example.org\r\nSubject: {subject}\r\n\r\nbody {n}\r\n".encode()
        store.blobs.s3.put_object(Bucket=store.blobs.bucket, Key=key, Body=raw)
        assert transport.invoke("MailboxFunction", Append(user, "INBOX", key, ["\\Seen"] if n == 0 else []).to_event())["ok"]
    return user


def _curl(server, user: str, path: str, *extra: str, scheme: str = "imap") -> str:
    host, port = server.address("imaps" if scheme == "imaps" else "imap")
    args = ["curl", "--silent", "--show-error", "--max-time", "60", "--user", f"{user}:{PASSWORD}"]
    if scheme == "imaps":
        args += ["--cacert", str(server.cert), "--insecure"]
    result = subprocess.run([*args, *extra, f"{scheme}://{host}:{port}/{path}"], capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_curl_lists_mailboxes(imap_server, account):
    listing = _curl(imap_server, account, "")
    for name in ("INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"):
        assert f'"/" "{name}"' in listing or f'"/" {name}' in listing, listing


def test_curl_fetches_a_message(imap_server, account):
    body = _curl(imap_server, account, "INBOX;UID=2")
    assert "Subject: second one" in body and "body 1" in body
    section = _curl(imap_server, account, "INBOX;UID=1;SECTION=HEADER.FIELDS%20(SUBJECT)")
    assert section.strip() == "Subject: hello curl"


def test_curl_searches(imap_server, account):
    assert _curl(imap_server, account, "INBOX?UNSEEN").strip() == "* SEARCH 2 3"
    assert _curl(imap_server, account, "INBOX?SUBJECT%20curl").strip() == "* SEARCH 1"


def test_curl_custom_command_over_implicit_tls(imap_server, account):
    out = _curl(imap_server, account, "INBOX", "--request", "EXAMINE INBOX", scheme="imaps")
    assert "3 EXISTS" in out
