"""Bad input gets BAD, NO or a clean BYE, and the gateway goes on serving (DESIGN.md
contract 5): unterminated and oversized literals, deep nesting, huge sequence sets,
unknown commands, long lines, random command lines; function failures are
NO [UNAVAILABLE]."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.functions import TemporaryFailure
from tests.integration.test_imap_support import TEST_SETTINGS, Raw, login_raw

pytest_plugins = ["tests.integration.test_imap_support"]


def _still_serving(gw, user: str) -> None:
    client = Raw.open(gw)
    login_raw(client, user)
    assert client.command(b"n", b"NOOP")[-1].startswith(b"n OK")
    client.close()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param(b"a FOO", b"a BAD", id="unknown-command"),
        pytest.param(b"a UID FOO 1", b"a BAD", id="unknown-uid-command"),
        pytest.param(b"a", b"a BAD", id="tag-only"),
        pytest.param(b"", b"* BAD", id="empty-line"),
        pytest.param(b"+ NOOP", b"* BAD", id="bad-tag"),
        pytest.param(b"a NOOP extra", b"a BAD", id="trailing-argument"),
        pytest.param(b"a LOGIN \"unterminated", b"a BAD", id="unterminated-quote"),
        pytest.param(b"a LOGIN  two-spaces x", b"a BAD", id="double-space"),
        pytest.param(b"a \xff\xfe\x00\x01", b"a BAD", id="binary"),
        pytest.param(b"a LOGIN {abc}", b"a BAD", id="bad-literal-size"),
    ],
)
def test_syntax_errors_are_bad(raw, line, expected):
    reply = raw.command(b"a", line) if line.startswith(b"a") else (raw.send(line + b"\r\n") or [raw.line()])
    assert reply[-1].startswith(expected), reply
    assert raw.command(b"z", b"NOOP")[-1].startswith(b"z OK")


def test_unterminated_literal_then_hang_up(imap_gateway, module_user):
    client = Raw.open(imap_gateway)
    client.send(b"a LOGIN {20}\r\n")
    assert client.line().startswith(b"+")
    client.send(b"short")
    client.close()
    _still_serving(imap_gateway, module_user)


def test_literal_larger_than_the_limit_is_refused_before_reading(raw):
    # synchronizing: BAD without "+", the session goes on (RFC 3501 §7.5)
    reply = raw.command(b"a", b"LOGIN {%d}" % (TEST_SETTINGS.max_literal + 1))
    assert reply == [b"a BAD Literal too large (the limit is 65536 octets)"]
    assert raw.command(b"b", b"NOOP")[-1].startswith(b"b OK")


def test_oversized_non_synchronizing_literal_closes(raw, imap_gateway, module_user):
    # RFC 7888 §4: its octets are already coming; they must not be read as commands
    raw.send(b"a LOGIN {999999+}\r\nb LOGOUT\r\n")
    reply = raw.until_tagged(b"a")
    assert any(line.startswith(b"* BYE") for line in reply) and reply[-1].startswith(b"a BAD")
    assert raw.closed()
    _still_serving(imap_gateway, module_user)


def test_refused_command_with_non_synchronizing_literal_closes(raw, imap_gateway, module_user):
    raw.send(b"a SELECT {5+}\r\nINBOX\r\n")  # SELECT before login: refused
    reply = raw.until_tagged(b"a")
    assert reply[-1].startswith(b"a BAD") and raw.closed()
    _still_serving(imap_gateway, module_user)


def test_line_too_long(raw):
    raw.send(b"a NOOP " + b"x" * (TEST_SETTINGS.max_line + 10) + b"\r\n")
    assert raw.until_tagged(b"a")[-1].startswith(b"a BAD Command line too long")
    assert raw.command(b"b", b"NOOP")[-1].startswith(b"b OK")


def test_line_too_long_ending_in_non_synchronizing_literal_closes(raw):
    raw.send(b"a LOGIN " + b"x" * (TEST_SETTINGS.max_line + 10) + b" {5+}\r\nhello\r\n")
    assert raw.until_tagged(b"a")[-1].startswith(b"a BAD")
    assert raw.closed()


def test_deeply_nested_parentheses(raw, module_user):
    login_raw(raw, module_user)
    raw.command(b"s", b"SELECT INBOX")
    reply = raw.command(b"a", b"SEARCH " + b"(" * 500 + b"ALL" + b")" * 500)
    assert reply[-1].startswith(b"a BAD Syntax error: too deeply nested")
    reply = raw.command(b"b", b"SEARCH " + b"NOT " * 500 + b"ALL")
    assert reply[-1].startswith(b"b BAD")
    assert raw.command(b"c", b"SEARCH ((ALL))")[-1].startswith(b"c OK")


def test_ten_thousand_item_sequence_sets(raw, module_user):
    login_raw(raw, module_user)
    raw.command(b"s", b"SELECT INBOX")
    items = b",".join(b"%d" % n for n in range(1, 10_001))
    # at the limit: a clean answer (UIDs that do not exist are no error)
    assert raw.command(b"a", b"UID FETCH " + items + b" (FLAGS)")[-1].startswith(b"a OK")
    assert raw.command(b"b", b"UID SEARCH UID " + items)[-1].startswith(b"b OK")
    # beyond it: BAD
    assert raw.command(b"c", b"UID FETCH " + items + b",10001 (FLAGS)")[-1].startswith(b"c BAD")
    # sequence numbers beyond EXISTS: BAD (RFC 3501 §9)
    assert raw.command(b"d", b"FETCH " + items + b" (FLAGS)")[-1].startswith(b"d BAD")


def test_bad_command_budget_ends_the_session(raw):
    for n in range(TEST_SETTINGS.max_bad_commands - 1):
        assert raw.command(b"t%d" % n, b"BOGUS")[-1].startswith(b"t%d BAD" % n)
    reply = raw.command(b"last", b"BOGUS")
    assert b"* BYE Too many invalid commands" in reply
    assert raw.closed()


def test_function_failure_is_unavailable(imap_gateway, module_user, monkeypatch):
    client = Raw.open(imap_gateway)
    login_raw(client, module_user)
    functions = imap_gateway.gateway.functions

    async def failing(function, request):
        raise TemporaryFailure(function, "simulated outage")

    monkeypatch.setattr(functions, "call", failing)
    reply = client.command(b"a", b"SELECT INBOX")
    # DESIGN.md contract 5: NO [UNAVAILABLE] with a reference, never a false success
    assert reply[-1].startswith(b"a NO [UNAVAILABLE] Temporary failure, try again later (ref ")
    assert client.command(b"b", b"LIST \"\" *")[-1].startswith(b"b NO [UNAVAILABLE]")
    monkeypatch.undo()
    assert client.command(b"c", b"SELECT INBOX")[-1].startswith(b"c OK")
    client.close()


def test_login_failure_is_unavailable_when_auth_is_down(imap_gateway, monkeypatch):
    client = Raw.open(imap_gateway)

    async def failing(function, request):
        raise TemporaryFailure(function, "simulated outage")

    monkeypatch.setattr(imap_gateway.gateway.functions, "call", failing)
    assert client.command(b"a", b"LOGIN x y")[-1].startswith(b"a NO [UNAVAILABLE]")
    client.close()


# -- random command lines (property test, bounded) ------------------------------------------

_WORDS = ["FETCH", "STORE", "SEARCH", "UID", "SELECT", "LIST", "APPEND", "COPY", "MOVE", "STATUS", "NOOP", "(", ")",
          "{3}", "{2+}", "*", "1:*", "BODY[", "]", "\"", "\\Seen", "NOT", "OR", "<0.5>", "INBOX", "%", "FLAGS", "1,2"]
_command = st.lists(st.one_of(st.sampled_from(_WORDS), st.text(string.printable.strip(), max_size=8)), max_size=12).map(
    lambda words: " ".join(words).replace("\r", "").replace("\n", "").encode("latin-1", "replace")
)


class _Client:
    def __init__(self, gw, user: str) -> None:
        self.gw, self.user = gw, user
        self.raw: Raw | None = None

    def get(self) -> Raw:
        if self.raw is None:
            self.raw = Raw.open(self.gw)
            login_raw(self.raw, self.user)
            self.raw.command(b"s", b"SELECT INBOX")
        return self.raw


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(line=_command)
def test_random_command_lines_get_an_answer(imap_gateway, module_user, line):
    client = _RANDOM_CLIENTS.setdefault(module_user, _Client(imap_gateway, module_user))
    raw = client.get()
    raw.sock.settimeout(5)
    # a literal announcement would wait for its octets: answer it with a few, then CRLF
    raw.send(b"r " + line + b"\r\n")
    try:
        while True:
            reply = raw.line()
            if reply.startswith(b"+"):
                raw.send(b"xyz\r\n")
                continue
            if reply.startswith(b"r ") or reply.startswith(b"* BYE"):
                break
    except (TimeoutError, ConnectionError, OSError):
        reply = b"closed"
    if reply.startswith(b"* BYE") or reply == b"closed":
        raw.close()
        client.raw = None
    else:
        assert reply.split(b" ")[1] in (b"OK", b"NO", b"BAD"), reply
    # and the gateway still answers
    probe = client.get()
    assert probe.command(b"p", b"NOOP")[-1].startswith(b"p OK")


_RANDOM_CLIENTS: dict[str, _Client] = {}


def test_a_reply_outside_the_contract_is_serverbug_and_the_session_goes_on(imap_gateway, module_user, monkeypatch):
    client = Raw.open(imap_gateway)
    login_raw(client, module_user)

    async def malformed(function, request):
        return {"ok": True}  # no "mailbox", no "messages"

    monkeypatch.setattr(imap_gateway.gateway.functions, "call", malformed)
    reply = client.command(b"a", b"SELECT INBOX")
    assert reply[-1].startswith(b"a NO [SERVERBUG] Internal error (ref ")  # RFC 5530; no traceback
    monkeypatch.undo()
    assert client.command(b"b", b"SELECT INBOX")[-1].startswith(b"b OK")
    client.close()
