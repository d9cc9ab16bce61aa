"""TLS for every listener: one server context shared by implicit TLS and STARTTLS, with
the policy of RFC 8996 and RFC 9325 (BCP 195), rebuilt when the certificate files change.

Locally, without a configured certificate, a self-signed one is generated with
``cryptography`` (never shipped, never reused across hosts).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import os
import ssl
from pathlib import Path

log = logging.getLogger(__name__)

#: TLS 1.2 cipher suites (TLS 1.3's are all AEAD and fixed by OpenSSL): ECDHE key exchange
#: only, for forward secrecy, with AES-GCM (RFC 9325 §4.2) or ChaCha20-Poly1305 (RFC 7905);
#: Mozilla's "intermediate" list without the finite-field DHE suites.
TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)


def self_signed(directory: Path, hostname: str) -> tuple[Path, Path]:
    """Write (once) a self-signed certificate and key for ``hostname`` and 127.0.0.1."""
    cert_path, key_path = directory / "gateway-cert.pem", directory / "gateway-key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """The gateway's TLS policy around one certificate and key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 8996: no TLS 1.0 or 1.1
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION  # RFC 9325 §3.3 (CRIME)
    context.options |= ssl.OP_NO_RENEGOTIATION  # RFC 9325 §3.5; no mail client needs it
    context.load_cert_chain(cert_file, key_file)
    return context


class ServerTls:
    """The current server context, rebuilt when the certificate or key file changes.

    A renewed certificate (an ACME client, an operator copying files) takes effect without
    a restart: new connections and STARTTLS use :attr:`context`, sessions already in TLS
    keep theirs. A pair that does not load (half-written, or a key that does not match) is
    logged and the working one kept; the next change is tried again.
    """

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.cert_file, self.key_file = cert_file, key_file
        self._stamp = self._files_stamp()
        self.context = server_context(cert_file, key_file)

    def _files_stamp(self) -> tuple[tuple[int, int, int], ...] | None:
        """What tells a changed file: modification time, size and inode (a file renamed over)."""
        try:
            stats = [os.stat(path) for path in (self.cert_file, self.key_file)]
        except OSError:
            return None
        return tuple((s.st_mtime_ns, s.st_size, s.st_ino) for s in stats)

    def reload_if_changed(self) -> bool:
        """Load the files again if they changed since the last look; True if now in use."""
        stamp = self._files_stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            context = server_context(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as error:
            log.error("TLS certificate %s not reloaded, the previous one stays: %s", self.cert_file, error)
            return False
        self.context = context
        log.info("TLS certificate reloaded from %s", self.cert_file)
        return True

    async def watch(self, interval: float) -> None:
        """Look at the files every ``interval`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.reload_if_changed()


async def start_implicit_tls(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, context: ssl.SSLContext, timeout: float
) -> None:
    """The TLS handshake on a connection accepted in the clear (RFC 8314 §3.3 implicit TLS),
    so that a PROXY header could be read first.

    The client's first TLS octets may already sit in the reader's buffer: the load balancer
    sends the header and the ClientHello together. asyncio's ``start_tls`` would never see
    them, so they are handed to the TLS layer, as the transport would hand them, once it is
    connected and before the transport reads from the socket again.
    """
    transport = writer.transport
    assert isinstance(transport, asyncio.Transport)  # a socket's, which reads too

    def deliver_then_resume() -> None:
        del transport.resume_reading  # the class's own again
        buffered = getattr(reader, "_buffer", None)
        if isinstance(buffered, bytearray) and buffered:
            pending = bytes(buffered)
            buffered.clear()
            _deliver(transport.get_protocol(), pending)
        transport.resume_reading()

    # loop.start_tls connects the TLS protocol, then calls transport.resume_reading.
    transport.resume_reading = deliver_then_resume  # type: ignore[method-assign]
    await writer.start_tls(context, ssl_handshake_timeout=timeout)


def _deliver(protocol: asyncio.BaseProtocol, data: bytes) -> None:
    """Give ``data`` to a protocol the way a transport does (asyncio's buffered or plain API)."""
    if isinstance(protocol, asyncio.BufferedProtocol):
        view = memoryview(data)
        while view:
            buffer = memoryview(protocol.get_buffer(len(view)))
            size = min(len(buffer), len(view))
            buffer[:size] = view[:size]
            protocol.buffer_updated(size)
            view = view[size:]
    elif isinstance(protocol, asyncio.Protocol):
        protocol.data_received(data)
