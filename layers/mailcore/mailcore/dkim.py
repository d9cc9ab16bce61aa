"""DKIM signing of outbound mail (RFC 6376), keys per domain in SSM Parameter Store.

A domain's key is the SecureString parameter ``<DKIM_PARAMETER_PATH>/<domain>``
holding JSON ``{"selector": ..., "private_key": <PEM>}``; ``mailctl dkim create``
makes it and prints the TXT record to publish at ``<selector>._domainkey.<domain>``.
The relay reads a domain's key once per container and keeps it a few minutes (a
rotated key takes effect within :data:`CACHE_SECONDS`); a domain without a key sends
unsigned. Signing itself is dkimpy's: RSA-SHA256 (RFC 8301 §3.1), relaxed/relaxed
canonicalization (RFC 6376 §3.4), the header fields dkimpy recommends.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import dkim as dkimpy

#: How long a container trusts a key (or its absence) it read.
CACHE_SECONDS = 300
#: RFC 8301 §3.2: at least 1024 bits, 2048 recommended.
KEY_BITS = 2048
DEFAULT_SELECTOR = "mail"


@dataclass(frozen=True)
class DkimKey:
    domain: str
    selector: str
    private_key: bytes  # PEM (PKCS#1 or PKCS#8)

    def to_parameter(self) -> str:
        return json.dumps({"selector": self.selector, "private_key": self.private_key.decode("ascii")})

    @classmethod
    def from_parameter(cls, domain: str, value: str) -> DkimKey:
        data = json.loads(value)
        return cls(domain, str(data["selector"]), str(data["private_key"]).encode("ascii"))


def parameter_name(path: str, domain: str) -> str:
    """``/<stack>/dkim/<domain>`` (A-labels: SSM names take ASCII only)."""
    return f"{path.rstrip('/')}/{domain.encode('idna').decode('ascii')}"


_cache: dict[tuple[str, str], tuple[float, DkimKey | None]] = {}
_cache_lock = threading.Lock()


@dataclass
class DkimKeys:
    ssm: Any
    path: str

    def get(self, domain: str) -> DkimKey | None:
        """The domain's key, or None: one GetParameter per domain per :data:`CACHE_SECONDS`."""
        if not self.path or not domain:
            return None
        name = parameter_name(self.path, domain)
        now = time.monotonic()
        with _cache_lock:
            cached = _cache.get((self.path, domain))
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            value = self.ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
            key: DkimKey | None = DkimKey.from_parameter(domain, value)
        except self.ssm.exceptions.ParameterNotFound:
            key = None
        with _cache_lock:
            _cache[(self.path, domain)] = (now + CACHE_SECONDS, key)
        return key

    def put(self, key: DkimKey, overwrite: bool = False) -> str:
        """Store ``key`` as a SecureString (the account's default SSM key encrypts it)."""
        name = parameter_name(self.path, key.domain)
        self.ssm.put_parameter(
            Name=name,
            Value=key.to_parameter(),
            Type="SecureString",
            Overwrite=overwrite,
            Description=f"DKIM private key of {key.domain} (selector {key.selector})",
        )
        with _cache_lock:
            _cache.pop((self.path, key.domain), None)
        return name


def sign(message: bytes, key: DkimKey) -> bytes:
    """``message`` with a DKIM-Signature header field on top (RFC 6376 §5)."""
    signature = dkimpy.sign(
        message,
        key.selector.encode("ascii"),
        key.domain.encode("idna"),
        key.private_key,
        canonicalize=(b"relaxed", b"relaxed"),
        linesep=b"\r\n",
    )
    return bytes(signature) + message


def generate_key(domain: str, selector: str = DEFAULT_SELECTOR, bits: int = KEY_BITS) -> DkimKey:
    """A new RSA key (``cryptography`` is imported here only: the relay never needs it)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    return DkimKey(domain, selector, pem)


def public_key_record(key: DkimKey) -> str:
    """The TXT record's value (RFC 6376 §3.6.1): ``v=DKIM1; k=rsa; p=<SubjectPublicKeyInfo, base64>``."""
    import base64

    from cryptography.hazmat.primitives import serialization

    private = serialization.load_pem_private_key(key.private_key, password=None)
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode('ascii')}"


def record_name(key: DkimKey) -> str:
    """Where the TXT record goes (RFC 6376 §3.6.2.1)."""
    return f"{key.selector}._domainkey.{key.domain}"


def zone_line(key: DkimKey) -> str:
    """The record as a zone file line, the value split into strings of at most 255
    octets (RFC 1035 §3.3.14; RFC 6376 §3.6.2.2 joins them back)."""
    value = public_key_record(key)
    chunks = [value[i : i + 255] for i in range(0, len(value), 255)]
    return f"{record_name(key)}. 3600 IN TXT ( " + " ".join(f'"{c}"' for c in chunks) + " )"
