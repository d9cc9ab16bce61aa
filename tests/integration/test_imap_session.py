"""IMAP conversations over real sockets: any-state and not-authenticated commands,
RFC 3501 §6.1 and §6.2 (with RFC 4959 SASL-IR, RFC 2971 ID), states (RFC 3501 §3)."""

from __future__ import annotations

import base64
import imaplib
import ssl

import pytest
from imapclient import IMAPClient

from tests.integration.test_imap_support import PASSWORD, Raw, connect, login_raw

pytest_plugins = ["tests.integration.test_imap_support"]


def test_greeting_announces_capabilities(raw):
    # GIVEN a fresh connection (the fixture read the greeting) WHEN CAPABILITY
    reply = raw.command(b"a1", b"CAPABILITY")
    # THEN RFC 3501 §6.1.1: IMAP4rev1 and the extensions, STARTTLS before TLS
    caps = reply[0].split()
    assert caps[:2] == [b"*", b"CAPABILITY"]
    for cap in (b"IMAP4rev1", b"STARTTLS", b"AUTH=PLAIN", b"LITERAL+", b"IDLE", b"UIDPLUS", b"MOVE", b"CONDSTORE",
                b"ESEARCH", b"SPECIAL-USE", b"CHILDREN", b"NAMESPACE", b"ID", b"ENABLE", b"UNSELECT", b"SASL-IR"):
        assert cap in caps, cap
    assert reply[-1] == b"a1 OK Capability completed"


def test_noop_and_logout_in_not_authenticated_state(raw):
    assert raw.command(b"a", b"NOOP")[-1].startswith(b"a OK")
    reply = raw.command(b"b", b"LOGOUT")
    # RFC 3501 §6.1.3: BYE before the tagged OK, then the server closes
    assert reply[0].startswith(b"* BYE") and reply[1].startswith(b"b OK")
    assert raw.closed()


def test_login_with_imaplib(imap_gateway, user):
    client = connect(imap_gateway)
    typ, data = client.login(user, PASSWORD)
    # RFC 3501 §6.2.3 / §7.2.1: the tagged OK carries the capabilities after login
    assert typ == "OK" and data[0].startswith(b"[CAPABILITY IMAP4rev1 SASL-IR") and data[0].endswith(b"] Logged in")
    assert b"STARTTLS" not in data[0] and b"AUTH=" not in data[0]
    assert client.state == "AUTH"
    client.logout()


def test_wrong_password_is_authenticationfailed(imap_gateway, user):
    client = connect(imap_gateway)
    with pytest.raises(imaplib.IMAP4.error, match=r"AUTHENTICATIONFAILED"):
        client.login(user, "wrong")
    client.logout()


def test_unknown_user_looks_like_a_wrong_password(raw):
    reply = raw.command(b"a", b"LOGIN nobody@nowhere.test secret")
    assert reply[-1].startswith(b"a NO [AUTHENTICATIONFAILED]")


def test_authenticate_plain_with_initial_response(raw, user):
    # RFC 4959 §3 SASL-IR
    token = base64.b64encode(b"\0" + user.encode() + b"\0" + PASSWORD.encode())
    reply = raw.command(b"a", b"AUTHENTICATE PLAIN " + token)
    assert reply[-1].startswith(b"a OK [CAPABILITY")


def test_authenticate_plain_with_continuation(raw, user):
    # RFC 3501 §6.2.2: "+ " then the base64 response
    raw.send(b"a AUTHENTICATE PLAIN\r\n")
    assert raw.line() == b"+ "
    raw.send(base64.b64encode(b"\0" + user.encode() + b"\0" + PASSWORD.encode()) + b"\r\n")
    assert raw.until_tagged(b"a")[-1].startswith(b"a OK")


def test_authenticate_login_mechanism(raw, user):
    raw.send(b"a AUTHENTICATE LOGIN\r\n")
    assert raw.line() == b"+ VXNlcm5hbWU6"
    raw.send(base64.b64encode(user.encode()) + b"\r\n")
    assert raw.line() == b"+ UGFzc3dvcmQ6"
    raw.send(base64.b64encode(PASSWORD.encode()) + b"\r\n")
    assert raw.until_tagged(b"a")[-1].startswith(b"a OK")


def test_authenticate_cancelled_is_bad(raw):
    raw.send(b"a AUTHENTICATE PLAIN\r\n")
    assert raw.line() == b"+ "
    raw.send(b"*\r\n")
    assert raw.until_tagged(b"a")[-1].startswith(b"a BAD")  # RFC 3501 §6.2.2


def test_authenticate_another_identity_is_refused(raw, user):
    token = base64.b64encode(b"someone@else.test\0" + user.encode() + b"\0" + PASSWORD.encode())
    assert raw.command(b"a", b"AUTHENTICATE PLAIN " + token)[-1].startswith(b"a NO [AUTHORIZATIONFAILED]")


def test_unsupported_mechanism(raw):
    assert raw.command(b"a", b"AUTHENTICATE CRAM-MD5")[-1].startswith(b"a NO")


def test_login_with_literals(raw, user):
    # RFC 3501 §4.3: synchronizing literals get "+" before their octets
    raw.send(b"a LOGIN {%d}\r\n" % len(user))
    assert raw.line().startswith(b"+ ")
    raw.send(user.encode() + b" {%d}\r\n" % len(PASSWORD))
    assert raw.line().startswith(b"+ ")
    raw.send(PASSWORD.encode() + b"\r\n")
    assert raw.until_tagged(b"a")[-1].startswith(b"a OK")


def test_login_with_non_synchronizing_literals(raw, user):
    # RFC 7888 LITERAL+: no continuation, the octets follow at once
    raw.send(b"a LOGIN {%d+}\r\n%s {%d+}\r\n%s\r\n" % (len(user), user.encode(), len(PASSWORD), PASSWORD.encode()))
    assert raw.until_tagged(b"a")[-1].startswith(b"a OK")


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(b"SELECT INBOX", id="select"),
        pytest.param(b"FETCH 1 FLAGS", id="fetch"),
        pytest.param(b"LIST \"\" *", id="list"),
        pytest.param(b"IDLE", id="idle"),
    ],
)
def test_commands_before_login_are_bad(raw, command):
    # RFC 3501 §3: commands of later states are not valid before authentication
    assert raw.command(b"a", command)[-1].startswith(b"a BAD")


def test_login_twice_is_bad(raw, user):
    login_raw(raw, user)
    assert raw.command(b"b", b"LOGIN x y")[-1].startswith(b"b BAD")


def test_id(raw):
    # RFC 2971 §3.1
    reply = raw.command(b"a", b'ID ("name" "test" "version" NIL)')
    assert reply[0].startswith(b'* ID ("name" "serverless-mail"')
    assert raw.command(b"b", b"ID NIL")[-1].startswith(b"b OK")


def test_starttls_then_login(imap_gateway, user):
    client = connect(imap_gateway)
    context = ssl.create_default_context(cafile=str(imap_gateway.cert_file))
    context.check_hostname = False
    client.starttls(ssl_context=context)
    assert "STARTTLS" not in client.capabilities  # RFC 3501 §6.2.1: not offered twice
    client.login(user, PASSWORD)
    client.logout()


def test_starttls_twice_is_bad(imap_gateway):
    client = connect(imap_gateway)
    context = ssl.create_default_context(cafile=str(imap_gateway.cert_file))
    context.check_hostname = False
    client.starttls(ssl_context=context)
    with pytest.raises(imaplib.IMAP4.error, match="TLS is already active"):
        client._simple_command("STARTTLS")


def test_implicit_tls_login(imap_gateway, user):
    client = connect(imap_gateway, "imaps")
    client.login(user, PASSWORD)
    assert "STARTTLS" not in client.capabilities
    client.logout()


def test_imapclient_login_and_capabilities(imap_gateway, user):
    host, port = imap_gateway.address("imap")
    with IMAPClient(host, port=port, ssl=False, timeout=15) as client:
        client.login(user, PASSWORD)
        caps = client.capabilities()
        assert b"IDLE" in caps and b"MOVE" in caps
        assert client.namespace().personal == (("", "/"),)
        assert client.id_({"name": "imapclient"})[0][:2] == (b"name", b"serverless-mail")


def test_enable_condstore(imap):
    typ, _data = imap._simple_command("ENABLE", "CONDSTORE")
    assert typ == "OK"
    assert imap.untagged_responses.pop("ENABLED") == [b"CONDSTORE"]


def test_plaintext_refused_without_tls_when_not_trusted(imap_gateway, gateway, user):
    from dataclasses import replace

    from tests.integration.test_imap_support import TEST_SETTINGS

    services = gateway.gateway.services
    services["imap"] = replace(TEST_SETTINGS, trust_loopback=False)
    services.pop("imap.shared", None)
    try:
        raw = Raw.open(imap_gateway)
        caps = raw.command(b"a", b"CAPABILITY")[0]
        assert b"LOGINDISABLED" in caps and b"AUTH=PLAIN" not in caps  # RFC 3501 §6.2.3
        assert raw.command(b"b", b"LOGIN " + user.encode() + b' "correct horse"')[-1].startswith(b"b NO [PRIVACYREQUIRED]")
        raw.close()
    finally:
        services["imap"] = TEST_SETTINGS
        services.pop("imap.shared", None)
