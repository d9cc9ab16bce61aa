"""Mail addresses: parsing and normalization.

RFC 5321 §2.4: the local part MAY be case-sensitive, domains are not. Like Postfix and
Dovecot by default, we treat local parts case-insensitively too, so ``Bob@Example.COM``
and ``bob@example.com`` are one mailbox. Plus-addressing (``user+tag``) is a convention
of the receiving system (RFC 5233 calls it subaddressing).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailcore.errors import InvalidInput

#: RFC 5321 §4.5.3.1.1 / §4.5.3.1.2: local part at most 64 octets, domain at most 255.
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
SUBADDRESS_SEPARATOR = "+"

# RFC 5321 §4.1.2 Dot-string (atext per RFC 5322 §3.2.3), plus UTF-8 per RFC 6531 §3.3.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]"
_DOT_STRING = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
# RFC 5321 §4.1.2 Domain: sub-domains of letters, digits and hyphens (U-labels allowed).
_LABEL = r"[A-Za-z0-9\u0080-\U0010ffff](?:[A-Za-z0-9\-\u0080-\U0010ffff]*[A-Za-z0-9\u0080-\U0010ffff])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


@dataclass(frozen=True)
class Address:
    """A normalized address: lower-case local part and domain."""

    local: str
    domain: str

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def base(self) -> Address:
        """The address without its subaddress: ``user+tag@d`` -> ``user@d``."""
        user, sep, _tag = self.local.partition(SUBADDRESS_SEPARATOR)
        return Address(user, self.domain) if sep and user else self


def normalize_domain(domain: str) -> str:
    domain = domain.strip().rstrip(".").lower()
    if not domain or len(domain) > MAX_DOMAIN or not _DOMAIN.fullmatch(domain):
        raise InvalidInput(f"malformed domain: {domain!r}")
    return domain


def parse_address(text: str) -> Address:
    """Parse ``local@domain`` (dot-string local part only; no quoted strings, no routes)."""
    local, sep, domain = text.strip().rpartition("@")
    if not sep or not local:
        raise InvalidInput(f"malformed address: {text!r}")
    if len(local.encode()) > MAX_LOCAL_PART or not _DOT_STRING.fullmatch(local):
        raise InvalidInput(f"malformed local part: {text!r}")
    return Address(local.lower(), normalize_domain(domain))
