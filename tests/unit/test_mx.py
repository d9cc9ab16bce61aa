"""MX resolution (RFC 5321 §5.1, RFC 7505) against a real DNS server on loopback.

Table-driven, as mox's ``smtpclient/gather_test.go``: each row is a zone, a domain, and
the hosts (or the failure) the lookup must answer.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
from mailcore.mx import MxResolver, make_resolver, server_address

from tests.dnsserver import DnsServer, Zone

ZONE = {
    # name: [(type, rdata), ...]
    "pref.test": [("MX", "20 b.pref.test."), ("MX", "10 a.pref.test."), ("MX", "30 c.pref.test.")],
    "a.pref.test": [("A", "127.0.0.21")],
    "b.pref.test": [("A", "127.0.0.22")],
    "c.pref.test": [("AAAA", "::1")],
    "equal.test": [("MX", "10 x.equal.test."), ("MX", "10 y.equal.test."), ("MX", "5 first.equal.test.")],
    "implicit.test": [("A", "127.0.0.22"), ("AAAA", "::1"), ("TXT", '"v=spf1 -all"')],
    "implicit6.test": [("AAAA", "::1")],
    "nomail.test": [("TXT", '"no address, no MX"')],
    "null.test": [("MX", "0 .")],
    "nullplus.test": [("MX", "0 ."), ("MX", "10 a.pref.test.")],
    "alias.test": [("CNAME", "pref.test.")],
    "chain.test": [("CNAME", "alias.test.")],
    "loop1.test": [("CNAME", "loop2.test.")],
    "loop2.test": [("CNAME", "loop1.test.")],
    "dangling.test": [("CNAME", "nowhere.test.")],
    "badhost.test": [("MX", "10 missing.badhost.test.")],
    "broken.test": [("MX", "10 a.broken.test.")],
}


@pytest.fixture(scope="module")
def dns() -> DnsServer:
    zone = Zone()
    for name, records in ZONE.items():
        for rdtype, rdata in records:
            zone.add(name, rdtype, rdata)
    zone.fail("servfail.test")
    zone.fail("a.broken.test")
    zone.fail("silent.test", "drop")
    with DnsServer(zone) as server:
        yield server


@pytest.fixture
def mx(dns: DnsServer) -> MxResolver:
    return MxResolver(make_resolver(dns.address, timeout=0.3, lifetime=0.6), rng=random.Random(7))


@pytest.mark.parametrize(
    ("domain", "hosts"),
    [
        pytest.param("pref.test", ["a.pref.test", "b.pref.test", "c.pref.test"], id="preference-order-5.1"),
        pytest.param("alias.test", ["a.pref.test", "b.pref.test", "c.pref.test"], id="cname-processed-as-initial-name-5.1"),
        pytest.param("chain.test", ["a.pref.test", "b.pref.test", "c.pref.test"], id="cname-chain"),
        pytest.param("nullplus.test", ["a.pref.test"], id="null-mx-beside-others-is-skipped"),
        pytest.param("badhost.test", ["missing.badhost.test"], id="host-checked-at-connect-time"),
    ],
)
def test_mx_hosts_in_order(mx, domain, hosts):
    result = mx.lookup(domain)
    assert result.ok and not result.implicit
    assert [h.host for h in result.hosts] == hosts


def test_equal_preferences_are_tried_in_random_order(mx):
    # RFC 5321 §5.1: "...the SMTP client SHOULD randomize them to spread the load"
    orders = Counter(tuple(h.host for h in mx.lookup("equal.test").hosts) for _ in range(60))
    assert set(orders) == {
        ("first.equal.test", "x.equal.test", "y.equal.test"),
        ("first.equal.test", "y.equal.test", "x.equal.test"),
    }


@pytest.mark.parametrize(
    ("domain", "addresses"),
    [
        pytest.param("implicit.test", ("127.0.0.22", "::1"), id="a-and-aaaa"),
        pytest.param("implicit6.test", ("::1",), id="aaaa-only"),
    ],
)
def test_no_mx_means_the_domain_itself_5_1(mx, domain, addresses):
    result = mx.lookup(domain)
    assert result.ok and result.implicit
    assert [(h.preference, h.host, h.addresses) for h in result.hosts] == [(0, domain, addresses)]


@pytest.mark.parametrize(
    ("domain", "permanent", "status", "words"),
    [
        pytest.param("null.test", True, "5.1.10", "null MX", id="null-mx-rfc7505"),
        pytest.param("nxdomain.test", True, "5.1.2", "NXDOMAIN", id="nxdomain"),
        pytest.param("dangling.test", True, "5.1.2", "NXDOMAIN", id="cname-to-nowhere"),
        pytest.param("nomail.test", True, "5.4.4", "no MX and no address", id="no-mx-no-address-5.1"),
        pytest.param("servfail.test", False, "4.4.3", "SERVFAIL", id="servfail-temporary"),
        pytest.param("silent.test", False, "4.4.3", "timeout", id="timeout-temporary"),
        pytest.param("loop1.test", False, "4.4.3", "CNAME", id="cname-loop-limit"),
    ],
)
def test_failures_say_whether_they_are_permanent(mx, domain, permanent, status, words):
    result = mx.lookup(domain)
    assert not result.ok
    assert (result.permanent, result.status) == (permanent, status)
    assert words.lower() in result.error.lower()


@pytest.mark.parametrize(
    ("host", "addresses", "permanent"),
    [
        pytest.param("a.pref.test", ("127.0.0.21",), False, id="a"),
        pytest.param("c.pref.test", ("::1",), False, id="aaaa"),
        pytest.param("missing.badhost.test", (), True, id="nxdomain"),
        pytest.param("nomail.test", (), True, id="nodata"),
        pytest.param("a.broken.test", (), False, id="servfail"),
    ],
)
def test_addresses_of_a_host(mx, host, addresses, permanent):
    found = mx.addresses(host)
    assert (found.addresses, found.permanent) == (addresses, permanent)


def test_ipv6_lookups_can_be_turned_off(dns):
    resolver = MxResolver(make_resolver(dns.address), ipv6=False)
    assert resolver.addresses("c.pref.test").permanent
    assert ("c.pref.test.", "AAAA") not in dns.zone.queries[-1:]


@pytest.mark.parametrize(
    ("text", "address"),
    [("127.0.0.53", ("127.0.0.53", 53)), ("127.0.0.1:5353", ("127.0.0.1", 5353)), ("::1", ("::1", 53)), ("[::1]:5353", ("::1", 5353))],
)
def test_server_addresses(text, address):
    assert server_address(text) == address
