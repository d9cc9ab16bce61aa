"""Interop: swaks (the Swiss Army Knife SMTP client, Debian package ``swaks``) hands mail to
the MX listener; every message is read back from the store byte for byte.

What swaks sent is known exactly: either the DATA file we gave it, or, for the message
swaks builds itself (the attachment), the client lines of its own transcript.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import function_transport, gateway, new_user  # noqa: F401  (fixtures)
from tests.integration.test_smtp import client_bytes, inbox, split_trace

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed (apt-get install swaks)"),
]


def swaks(gateway, *args: str, timeout: float = 120) -> bytes:  # noqa: F811
    """Run swaks against the MX listener; its transcript."""
    host, port = gateway.address("smtp")
    command = ["swaks", "--server", host, "--port", str(port), "--helo", "swaks.example", *args]
    result = subprocess.run(command, capture_output=True, timeout=timeout)
    assert result.returncode == 0, (result.stdout[-3000:] + result.stderr[-3000:]).decode(errors="replace")
    return result.stdout


def sent_data(transcript: bytes) -> bytes:
    """The message swaks sent, from its transcript: the client lines (" -> ") between the
    354 reply and the final dot, unstuffed (RFC 5321 §4.5.2), each ended by CR LF."""
    lines = transcript.split(b"\n")
    start = next(i for i, line in enumerate(lines) if re.match(rb"<[-*~ ]{1,3} *354 ", line)) + 1
    body = []
    for line in lines[start:]:
        assert line.startswith(b" -> "), line
        text = line[4:].removesuffix(b"\r")
        if text == b".":
            break
        body.append(text[1:] if text.startswith(b".") else text)
    return b"".join(line + b"\r\n" for line in body)


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return f"@{path}"


PLAIN = (
    b"From: Swaks <swaks@example.org>\r\nTo: someone\r\nSubject: plain\r\nMessage-ID: <plain@example.org>\r\n"
    b"\r\nA plain message.\r\n.leading dot\r\n\r\nEnd.\r\n"
)


def test_plain_message(gateway, store, domain, tmp_path):  # noqa: F811
    user = new_user(store, domain)
    transcript = swaks(
        gateway, "--from", "swaks@example.org", "--to", user, "--data", write(tmp_path, "plain.eml", PLAIN)
    )
    assert re.search(rb"<- {2}250 2\.0\.0 Ok: queued as \S+", transcript)
    (stored,) = inbox(store, user)
    # swaks ends the data with CR LF . CR LF even after a final CR LF: one empty line more
    assert sent_data(transcript) == PLAIN + b"\r\n"
    assert client_bytes(stored) == sent_data(transcript)
    return_path, received, _ = split_trace(stored)
    assert return_path == b"Return-Path: <swaks@example.org>\r\n"
    assert received.startswith(b"Received: from swaks.example ([127.0.0.1])\r\n")


def test_eight_bit_and_utf8_headers(gateway, store, domain, tmp_path):  # noqa: F811
    user = new_user(store, domain)
    message = (
        "From: Jürgen Müller <juergen@example.org>\r\nTo: Zoë <zoe@example.org>\r\n"
        "Subject: Grüße aus Köln \u2013 你好 \u2013 🎉\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\nÄÖÜ äöü ß € 日本語\r\n"
    ).encode() + b"latin-1 octets: \xe9\xe8\xe0\r\n"
    transcript = swaks(
        gateway, "--from", "juergen@example.org", "--to", user, "--data", write(tmp_path, "8bit.eml", message)
    )
    (stored,) = inbox(store, user)
    assert sent_data(transcript) == message + b"\r\n"
    assert client_bytes(stored) == sent_data(transcript)


def test_ten_megabyte_attachment(gateway, store, domain, tmp_path):  # noqa: F811
    user = new_user(store, domain)
    attachment = tmp_path / "big.bin"
    attachment.write_bytes(os.urandom(10 * 1024 * 1024))
    transcript = swaks(
        gateway,
        "--from",
        "swaks@example.org",
        "--to",
        user,
        "--header",
        "Subject: attachment",
        "--attach",
        f"@{attachment}",
        timeout=300,
    )
    (stored,) = inbox(store, user)
    sent = sent_data(transcript)
    assert len(sent) > 10 * 1024 * 1024 * 4 // 3
    assert client_bytes(stored) == sent
    # and the attachment inside is the file
    encoded = re.search(rb"\r\n\r\n([A-Za-z0-9+/=\r\n]{1000,})\r\n--", sent)
    assert encoded is not None
    assert base64.b64decode(encoded.group(1)) == attachment.read_bytes()


def test_pipelined_transaction_to_several_recipients(gateway, store, domain, tmp_path):  # noqa: F811
    bob, carol = new_user(store, domain), new_user(store, domain)
    transcript = swaks(
        gateway,
        "--pipeline",
        "--from",
        "swaks@example.org",
        "--to",
        f"{bob},{carol},nobody@{domain}",
        "--data",
        write(tmp_path, "pipelined.eml", PLAIN),
    )
    assert b"PIPELINING" in transcript
    assert re.search(rb"<\*\* +550 5\.1\.1 ", transcript)  # the unknown recipient, in the pipelined group
    for user in (bob, carol):
        assert [client_bytes(m) for m in inbox(store, user)] == [sent_data(transcript)]


def test_starttls(gateway, store, domain, tmp_path):  # noqa: F811
    support = subprocess.run(["swaks", "--support"], capture_output=True, text=True)
    if not re.search(r"^=== TLS supported", support.stdout + support.stderr, re.MULTILINE):
        pytest.skip("swaks has no TLS here (Debian: libnet-ssleay-perl, a Recommends of swaks)")
    user = new_user(store, domain)
    transcript = swaks(
        gateway, "--tls", "--from", "swaks@example.org", "--to", user, "--data", write(tmp_path, "tls.eml", PLAIN)
    )
    (stored,) = inbox(store, user)
    assert client_bytes(stored) == PLAIN + b"\r\n"
    assert b"STARTTLS" in transcript
    assert b" with ESMTPS id " in split_trace(stored)[1]
