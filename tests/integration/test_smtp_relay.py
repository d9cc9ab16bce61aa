"""No open relay (DESIGN.md contract 6): without authentication, port 25 accepts mail only
for local recipients, however the client writes the address.

``{D}`` is a local domain, ``{U}`` the local part of a user there. Each row names the rule.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import pytest
from mailcore.settings import Settings
from mailcore.store import Store

from gateway.smtp import replies

from .conftest import new_user
from .test_smtp import MESSAGE, Wire, expect, inbox

DENIED = replies.S554_RELAY_DENIED
UNKNOWN = replies.S550_NO_SUCH_USER
BAD = replies.S501_BAD_RECIPIENT
OK = replies.S250_RECIPIENT_OK

RELAY_ATTEMPTS = [
    pytest.param("<bob@example.net>", DENIED, id="foreign-domain"),
    pytest.param("<bob@EXAMPLE.NET>", DENIED, id="foreign-domain-upper-case"),
    pytest.param("bob@example.net", DENIED, id="foreign-unbracketed"),
    pytest.param(" <bob@example.net>", DENIED, id="foreign-space-after-colon"),
    pytest.param("<bob@example.net> NOTIFY=SUCCESS", DENIED, id="foreign-with-DSN"),
    pytest.param("<postmaster@example.net>", DENIED, id="foreign-postmaster"),
    pytest.param("<bob@{D}.example.net>", DENIED, id="lookalike-subdomain"),
    pytest.param("<bob@localhost>", DENIED, id="localhost"),
    # RFC 5321 §3.6.1 / Appendix C: source routes are ignored, the mailbox decides
    pytest.param("<@{D}:bob@example.net>", DENIED, id="source-route-via-local"),
    pytest.param("<@{D},@example.org:bob@example.net>", DENIED, id="source-route-two-hops"),
    pytest.param("<@example.net:{U}@{D}>", OK, id="source-route-to-local-is-local"),
    # Percent hack (Postfix allow_percent_hack): user%elsewhere@local means user@elsewhere
    pytest.param("<bob%example.net@{D}>", DENIED, id="percent-hack"),
    pytest.param("<bob%example.net%{D}@{D}>", DENIED, id="percent-hack-nested"),
    pytest.param("<bob%{D}@example.net>", DENIED, id="percent-hack-foreign-outer"),
    pytest.param("<{U}%{D}@{D}>", OK, id="percent-hack-to-local-is-local"),
    pytest.param("<bob%@{D}>", UNKNOWN, id="percent-hack-empty-host"),
    # Bang path (Postfix swap_bangpath): elsewhere!user@local means user@elsewhere
    pytest.param("<example.net!bob@{D}>", DENIED, id="bang-path"),
    pytest.param("<{D}!{U}@{D}>", OK, id="bang-path-to-local-is-local"),
    # Quoted local parts (RFC 5321 §4.1.2 Quoted-string): the content is what counts
    pytest.param('<"bob@example.net"@{D}>', DENIED, id="quoted-at-sign"),
    pytest.param('<"bob%example.net"@{D}>', DENIED, id="quoted-percent"),
    pytest.param('<"bob@{D}"@example.net>', DENIED, id="quoted-local-foreign-outer"),
    pytest.param('<"{U}"@{D}>', OK, id="quoted-dot-string-equals-unquoted"),
    pytest.param('<"john smith"@{D}>', UNKNOWN, id="quoted-no-such-mailbox"),
    pytest.param('<"bob\\@example.net"@{D}>', DENIED, id="quoted-pair-at-sign"),
    # Address literals (RFC 5321 §4.1.3) are never our domains
    pytest.param("<bob@[192.0.2.1]>", DENIED, id="ipv4-literal"),
    pytest.param("<bob@[127.0.0.1]>", DENIED, id="loopback-literal"),
    pytest.param("<bob@[IPv6:2001:db8::1]>", DENIED, id="ipv6-literal"),
    pytest.param('<"bob%[192.0.2.1]"@{D}>', DENIED, id="percent-hack-to-literal"),
    pytest.param("<bob%[192.0.2.1]@{D}>", BAD, id="unquoted-bracket-in-local-part"),
    pytest.param("<{U}@[IPv6:::1]>", DENIED, id="local-user-at-literal"),
    # Malformed: refused before anybody is asked
    pytest.param("<bob@{D}@example.net>", BAD, id="two-at-signs"),
    pytest.param("<bob@example.net.>", BAD, id="trailing-dot"),
    pytest.param("<bob@[192.0.2.999]>", BAD, id="bad-literal"),
]


@dataclass
class Site:
    store: Store
    domain: str
    user: str

    @property
    def local(self) -> str:
        return self.user.split("@")[0]


@pytest.fixture(scope="module")
def site(local_stack) -> Site:
    """One local domain with a user who is also its catch-all (which must not swallow routed mail)."""
    store = Store.build(Settings.from_env(local_stack.environment))
    domain = store.accounts.add_domain(f"r{secrets.token_hex(6)}.test")
    user = new_user(store, domain)
    store.accounts.set_catchall(domain, user)
    return Site(store, domain, user)


@pytest.mark.parametrize(
    "sender", ["<a@example.org>", "<>", "<{U}@{D}>"], ids=["foreign-sender", "null-sender", "local-sender"]
)
@pytest.mark.parametrize(("recipient", "expected"), RELAY_ATTEMPTS)
def test_relay_attempts_are_refused(gateway, site, sender, recipient, expected):
    before = len(inbox(site.store, site.user))
    wire = Wire(gateway.address("smtp"))
    try:
        wire.reply()
        wire.send(b"EHLO relay.example\r\n")
        wire.reply()
        wire.send(f"MAIL FROM:{sender.format(D=site.domain, U=site.local)}\r\n".encode())
        assert wire.code() == expect(replies.S250_SENDER_OK)
        # WHEN the client names the recipient this way
        wire.send(f"RCPT TO:{recipient.format(D=site.domain, U=site.local)}\r\n".encode())
        # THEN the reply is the row's, and a refused recipient gets no message
        assert wire.code() == expect(expected)
        wire.send(b"DATA\r\n")
        if expected is OK:
            assert wire.code() == (354, "")
            wire.send(MESSAGE + secrets.token_hex(8).encode() + b"\r\n.\r\n")  # unique: no dedup
            assert wire.code()[0] == 250
            assert len(inbox(site.store, site.user)) == before + 1  # delivered here, to the local user
        else:
            assert wire.code() == expect(replies.S554_NO_VALID_RECIPIENTS)
            assert len(inbox(site.store, site.user)) == before
    finally:
        wire.close()
