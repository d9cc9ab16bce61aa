"""Address parsing and normalization (RFC 5321 §2.4, §4.1.2, §4.5.3.1)."""

from __future__ import annotations

import pytest
from mailcore.addresses import Address, parse_address
from mailcore.errors import InvalidInput


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("Bob@Example.COM", Address("bob", "example.com"), id="case-folded (RFC 5321 §2.4)"),
        pytest.param("bob@example.com.", Address("bob", "example.com"), id="trailing-dot-of-domain"),
        pytest.param(
            "first.last+tag@sub.example.org", Address("first.last+tag", "sub.example.org"), id="dot-string-with-plus"
        ),
        pytest.param("jürgen@bücher.example", Address("jürgen", "bücher.example"), id="utf8 (RFC 6531 §3.3)"),
    ],
)
def test_parse(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("no-at-sign", id="no-at"),
        pytest.param("@example.com", id="empty-local"),
        pytest.param("a..b@example.com", id="double-dot (RFC 5321 §4.1.2 Dot-string)"),
        pytest.param('"quoted"@example.com', id="quoted-local-not-accepted-for-accounts"),
        pytest.param("x" * 65 + "@example.com", id="local-over-64 (RFC 5321 §4.5.3.1.1)"),
        pytest.param("a@-bad-.example", id="bad-label"),
        pytest.param("a@exa mple.com", id="space-in-domain"),
        pytest.param("a@@example.com", id="two-at"),
    ],
)
def test_malformed(text):
    with pytest.raises(InvalidInput):
        parse_address(text)


@pytest.mark.parametrize(
    ("text", "base"),
    [
        ("user+tag@example.com", "user@example.com"),
        ("user+a+b@example.com", "user@example.com"),
        ("user@example.com", "user@example.com"),
        ("+tag@example.com", "+tag@example.com"),  # nothing before the separator: no subaddress
    ],
)
def test_subaddress_base(text, base):
    assert str(parse_address(text).base) == base
