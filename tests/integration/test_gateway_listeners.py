"""Every listener greets on its port in its protocol's words, over TLS where the port
requires it (RFC 8314 §3.3)."""

from __future__ import annotations

import socket
import ssl

import pytest

from gateway.config import IMPLICIT_TLS, LISTENERS, PROTOCOL


@pytest.mark.parametrize("listener", sorted(LISTENERS))
def test_listener_greets(gateway, listener):
    host, port = gateway.address(listener)
    with socket.create_connection((host, port), timeout=10) as raw:
        sock: socket.socket = raw
        if listener in IMPLICIT_TLS:
            context = ssl.create_default_context(cafile=str(gateway.cert_file))
            context.check_hostname = False
            sock = context.wrap_socket(raw)
            assert sock.version() in {"TLSv1.2", "TLSv1.3"}
        greeting = sock.recv(512)
    assert greeting.endswith(b"\r\n")
    expected = {"smtp": b"220 ", "imap": b"* OK", "pop3": b"+OK"}[PROTOCOL[listener]]
    assert greeting.startswith(expected)
