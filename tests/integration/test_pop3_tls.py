"""POP3 over TLS: implicit TLS on the pop3s port (RFC 8314 §3.3) and STLS on the plain
port (RFC 2595 §4), and the plaintext-credentials policy (RFC 2595 §2.2)."""

from __future__ import annotations

import poplib
import socket
import ssl

import pytest

from gateway.pop3.settings import Pop3Settings

PASSWORD = "correct horse"


@pytest.fixture(autouse=True)
def fast_failures(gateway, monkeypatch) -> None:
    monkeypatch.setitem(gateway.gateway.services, "pop3", Pop3Settings(auth_failure_delay=0.05))


def client_context(gateway) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(gateway.cert_file))
    context.check_hostname = False
    return context


def test_implicit_tls_login(gateway, user):
    host, port = gateway.address("pop3s")
    pop = poplib.POP3_SSL(host, port, context=client_context(gateway), timeout=10)
    try:
        assert pop.getwelcome().startswith(b"+OK")
        caps = pop.capa()
        assert "STLS" not in caps  # RFC 2595 §4: not offered once TLS is active
        assert "USER" in caps and caps["SASL"] == ["PLAIN"]
        pop.user(user)
        assert pop.pass_(PASSWORD).startswith(b"+OK")
        assert pop.stat() == (0, 0)
        assert pop.quit().startswith(b"+OK")
    finally:
        pop.close()


def test_stls_upgrades_the_plain_port(gateway, user):
    host, port = gateway.address("pop3")
    pop = poplib.POP3(host, port, timeout=10)
    try:
        assert "STLS" in pop.capa()
        assert pop.stls(client_context(gateway)).startswith(b"+OK")
        assert pop.sock.version() in {"TLSv1.2", "TLSv1.3"}
        assert "STLS" not in pop.capa()
        with pytest.raises(poplib.error_proto, match="already active"):
            pop._shortcmd("STLS")  # RFC 2595 §4: only once
        pop.user(user)
        assert pop.pass_(PASSWORD).startswith(b"+OK")
        pop.quit()
    finally:
        pop.close()


def test_stls_forgets_the_user_given_before(gateway, user):
    # RFC 2595 §4: the server discards what the client said before TLS.
    host, port = gateway.address("pop3")
    pop = poplib.POP3(host, port, timeout=10)
    try:
        pop.user(user)
        pop.stls(client_context(gateway))
        with pytest.raises(poplib.error_proto, match="USER first"):
            pop.pass_(PASSWORD)
    finally:
        pop.close()


def test_plaintext_pipelined_after_stls_is_discarded(gateway, user):
    # A man in the middle appends commands to STLS in cleartext (CVE-2011-0411 class):
    # they must not run inside the TLS session.
    sock = socket.create_connection(gateway.address("pop3"), timeout=10)
    try:
        sock.recv(512)
        sock.sendall(b"STLS\r\nUSER injected@example.org\r\nCAPA\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            reply += sock.recv(1)
        assert reply.startswith(b"+OK")
        tls = client_context(gateway).wrap_socket(sock)
        tls.sendall(b"NOOP\r\n")
        first = tls.recv(512)
        # Had USER/CAPA run, their replies would come first; NOOP is invalid before login.
        assert first.startswith(b"-ERR NOOP is not valid")
        tls.sendall(b"PASS " + PASSWORD.encode() + b"\r\n")
        assert tls.recv(512).startswith(b"-ERR No user name given")
        tls.close()
    finally:
        sock.close()


def test_failed_tls_handshake_ends_the_session_only(gateway, user):
    sock = socket.create_connection(gateway.address("pop3"), timeout=10)
    try:
        sock.recv(512)
        sock.sendall(b"STLS\r\n")
        assert sock.recv(512).startswith(b"+OK")
        sock.sendall(b"this is not a TLS ClientHello\r\n" * 4)
        sock.settimeout(5)
        try:
            answer = sock.recv(512)
        except ConnectionResetError:
            answer = b""
        assert not answer.startswith((b"+OK", b"-ERR"))  # a TLS alert or a close
    finally:
        sock.close()
    host, port = gateway.address("pop3")  # the listener goes on
    pop = poplib.POP3(host, port, timeout=10)
    assert pop.getwelcome().startswith(b"+OK")
    pop.close()


def test_plaintext_credentials_refused_on_insecure_non_trusted_connections(gateway, monkeypatch, user):
    # RFC 2595 §2.2, with loopback treated as any other network.
    monkeypatch.setitem(gateway.gateway.services, "pop3", Pop3Settings(auth_failure_delay=0.05, trust_loopback=False))
    host, port = gateway.address("pop3")
    pop = poplib.POP3(host, port, timeout=10)
    try:
        caps = pop.capa()
        assert "USER" not in caps and "SASL" not in caps and "STLS" in caps
        with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\] Plaintext authentication disallowed"):
            pop.user(user)
        with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\] Plaintext authentication disallowed"):
            pop._shortcmd("AUTH PLAIN AHVzZXIAcGFzcw==")
        pop.stls(client_context(gateway))
        caps = pop.capa()
        assert "USER" in caps and caps["SASL"] == ["PLAIN"]
        pop.user(user)
        assert pop.pass_(PASSWORD).startswith(b"+OK")
        pop.quit()
    finally:
        pop.close()
