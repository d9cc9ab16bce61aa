"""Where mail for a domain goes: MX resolution per RFC 5321 §5.1, with dnspython.

:meth:`MxResolver.lookup` answers an :class:`MxResult`: the hosts to try, in order, or why
there are none and whether that is ``permanent`` (bounce now) or temporary (retry
later). Address records of each host are looked up when the client gets to that host
(:meth:`MxResolver.addresses`), so a message delivered by the first MX costs no lookups
for the others.

The resolver is injectable: :func:`make_resolver` gives the system's resolver, or one
asking a given server (``RELAY_DNS_SERVER=127.0.0.1:5353`` in tests).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, Protocol

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

#: Enough for any sane chain; a longer one is a loop or a misconfiguration.
MAX_CNAME_HOPS = 8
#: Per query; the lifetime bounds a query and its retries.
QUERY_TIMEOUT = 5.0
QUERY_LIFETIME = 10.0


class DnsResolver(Protocol):
    """What :class:`MxResolver` needs of ``dns.resolver.Resolver``."""

    def resolve(self, qname: Any, rdtype: Any = ..., *args: Any, **kwargs: Any) -> Any: ...


def server_address(server: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``v6addr`` or ``[v6addr]:port`` -> (host, port); port 53 by default."""
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 53
    if server.count(":") == 1:
        host, port = server.split(":")
        return host, int(port)
    return server, 53


#: One answer cache per container and server, honouring the records' TTLs.
_caches: dict[str, dns.resolver.LRUCache] = {}


def make_resolver(server: str = "", timeout: float = QUERY_TIMEOUT, lifetime: float = QUERY_LIFETIME) -> Any:
    """The system's resolver, or one that asks ``server`` (see :func:`server_address`) only.

    Answers are cached per container (dnspython's LRU cache, within each record's TTL):
    a batch of mail to one domain looks its MX up once."""
    resolver = _new_resolver(server)
    resolver.timeout = timeout
    resolver.lifetime = lifetime
    resolver.cache = _caches.setdefault(server, dns.resolver.LRUCache(max_size=10_000))
    return resolver


def _new_resolver(server: str) -> Any:
    if server:
        resolver = dns.resolver.Resolver(configure=False)
        host, port = server_address(server)
        resolver.nameservers = [host]
        resolver.port = port
    else:
        resolver = dns.resolver.Resolver()
    return resolver


@dataclass(frozen=True)
class MxHost:
    """One host to try; ``addresses`` are known already for an implicit MX."""

    preference: int
    host: str
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class MxResult:
    """The hosts for ``domain`` in the order to try them, or the reason there are none.

    ``status`` is an RFC 3463 enhanced status code for a failure (the DSN's ``Status``),
    ``error`` a diagnostic for humans.
    """

    domain: str
    hosts: tuple[MxHost, ...] = ()
    implicit: bool = False
    permanent: bool = False
    status: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.hosts)


@dataclass(frozen=True)
class AddressResult:
    """The IPv4 then IPv6 addresses of a host, or why there are none."""

    host: str
    addresses: tuple[str, ...] = ()
    permanent: bool = False
    error: str = ""


class _CnameLoop(Exception):
    """A CNAME chain longer than :data:`MAX_CNAME_HOPS` (most likely a loop)."""


def _temporary_text(error: Exception) -> str:
    if isinstance(error, dns.exception.Timeout):
        return "DNS timeout"
    if isinstance(error, dns.resolver.NoNameservers):
        return "DNS server failure (SERVFAIL)"
    if isinstance(error, _CnameLoop):
        return "CNAME chain too long (a loop?)"
    return f"DNS error ({type(error).__name__})"


@dataclass
class MxResolver:
    resolver: DnsResolver
    #: Shuffles hosts of equal preference (RFC 5321 §5.1); injectable for tests.
    rng: random.Random = field(default_factory=random.Random)
    #: Also look up AAAA records (tried after the IPv4 addresses).
    ipv6: bool = True
    max_cname_hops: int = MAX_CNAME_HOPS

    def _query(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> tuple[list[Any], dns.name.Name]:
        """The records of ``name`` (after following CNAMEs) and the canonical name.

        RFC 5321 §5.1: "If a CNAME record is found instead, the resulting name is
        processed as if it were the initial name." A recursive resolver follows the
        chain itself; when the answer stops at a CNAME, we ask again for its target.
        Raises NXDOMAIN (permanent) and other DNS exceptions (temporary).
        """
        for _ in range(self.max_cname_hops + 1):
            answer = self.resolver.resolve(name, rdtype, raise_on_no_answer=False, search=False)
            if answer.rrset is not None:
                return list(answer.rrset), answer.canonical_name
            target = answer.canonical_name
            if target == name:
                return [], name  # NODATA: the name exists, without records of this type
            name = target
        raise _CnameLoop(f"more than {self.max_cname_hops} CNAMEs")

    def lookup(self, domain: str) -> MxResult:
        """RFC 5321 §5.1 and RFC 7505: the MX hosts of ``domain``, best first."""
        try:
            name = dns.name.from_text(domain)
        except dns.exception.DNSException as error:
            return MxResult(domain, permanent=True, status="5.1.2", error=f"invalid domain name ({error})")
        try:
            records, canonical = self._query(name, dns.rdatatype.MX)
        except dns.resolver.NXDOMAIN:
            # RFC 3463 X.1.2: bad destination system address.
            return MxResult(domain, permanent=True, status="5.1.2", error=f"domain {domain} does not exist (NXDOMAIN)")
        except (dns.exception.DNSException, _CnameLoop) as error:
            # RFC 3463 X.4.3: directory server failure; try again later.
            return MxResult(domain, status="4.4.3", error=f"MX lookup for {domain}: {_temporary_text(error)}")
        if records:
            return self._from_records(domain, records)
        return self._implicit(domain, canonical)

    def _from_records(self, domain: str, records: Sequence[Any]) -> MxResult:
        usable = [r for r in records if r.exchange != dns.name.root]
        if not usable:
            # RFC 7505 §3: "0 ." says the domain accepts no mail; §4.2: 5.1.10.
            return MxResult(domain, permanent=True, status="5.1.10", error=f"domain {domain} accepts no mail (null MX)")
        # Deviation from RFC 7505 §3 (a null MX "MUST NOT" stand beside others): if it
        # does, the other hosts are tried, as Postfix does.
        ordered: list[MxHost] = []
        usable.sort(key=lambda r: r.preference)
        for _preference, group in groupby(usable, key=lambda r: r.preference):
            hosts = [MxHost(r.preference, r.exchange.to_text(omit_final_dot=True)) for r in group]
            self.rng.shuffle(hosts)  # RFC 5321 §5.1: random among equal preferences
            ordered += hosts
        return MxResult(domain, hosts=tuple(ordered))

    def _implicit(self, domain: str, canonical: dns.name.Name) -> MxResult:
        """RFC 5321 §5.1: no MX records: the domain itself is the only host, preference 0."""
        host = canonical.to_text(omit_final_dot=True)
        found = self.addresses(host)
        if found.addresses:
            return MxResult(domain, hosts=(MxHost(0, host, found.addresses),), implicit=True)
        if found.permanent:
            # "...or the implicit MX is unusable, this situation MUST be reported as an error."
            # RFC 3463 X.4.4: unable to route.
            return MxResult(domain, permanent=True, status="5.4.4", error=f"no MX and no address for {domain}")
        return MxResult(domain, status="4.4.3", error=found.error)

    def addresses(self, host: str) -> AddressResult:
        """A and then AAAA records of ``host``; permanent if the host does not exist or has none."""
        try:
            name = dns.name.from_text(host)
        except dns.exception.DNSException as error:
            return AddressResult(host, permanent=True, error=f"invalid host name {host!r} ({error})")
        found: list[str] = []
        temporary = ""
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA) if self.ipv6 else (dns.rdatatype.A,):
            try:
                records, _ = self._query(name, rdtype)
            except dns.resolver.NXDOMAIN:
                return AddressResult(host, permanent=True, error=f"host {host} does not exist (NXDOMAIN)")
            except (dns.exception.DNSException, _CnameLoop) as error:
                temporary = f"address lookup for {host}: {_temporary_text(error)}"
                continue
            found += [r.address for r in records]
        if found:
            return AddressResult(host, tuple(found))
        if temporary:
            return AddressResult(host, error=temporary)
        return AddressResult(host, permanent=True, error=f"host {host} has no address records")
