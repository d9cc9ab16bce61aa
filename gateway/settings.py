"""What the protocols' settings share: reading ``<PREFIX>_<FIELD>`` from the environment,
and the policy for credentials in the clear."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import fields
from typing import Any, ClassVar, TypeVar

T = TypeVar("T", bound="EnvSettings")


class EnvSettings:
    """A frozen dataclass whose fields can be set by ``<ENV_PREFIX>_<FIELD NAME>``."""

    ENV_PREFIX: ClassVar[str] = ""

    @classmethod
    def from_env(cls: type[T], env: Mapping[str, str] | None = None) -> T:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]
            raw = env.get(f"{cls.ENV_PREFIX}_{f.name.upper()}")
            if raw is None:
                continue
            kind: Any = type(f.default)
            values[f.name] = raw.lower() in ("1", "true", "yes") if kind is bool else kind(raw)
        return cls(**values)


def plaintext_permitted(secure: bool, peer_host: str, *, trust_loopback: bool, allow_plaintext: bool) -> bool:
    """May credentials travel in the clear on this connection (RFC 2595 §2.2, RFC 3501
    §2.3.1.1)? Only over TLS, except (as Dovecot's ``disable_plaintext_auth`` does for
    local connections) from loopback, or where policy allows it."""
    if secure or allow_plaintext:
        return True
    if not trust_loopback:
        return False
    try:
        address = ipaddress.ip_address(peer_host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
