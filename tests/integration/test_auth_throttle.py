"""Password guessing over real sockets (issue #7): failures from one address are answered
later and later, then refused with each protocol's "try again later" (IMAP NO
[UNAVAILABLE], POP3 -ERR [SYS/TEMP], submission 454 4.7.0 then 421 4.7.0); guesses from
many addresses at one account get those addresses refused while the owner still logs in
from a fresh one; counters expire; a success resets the account's.

The gateway here is a second one on loopback: its AuthFunction is the real operation
(mailcore.auth_service) on the stack's ThrottleTable with a small policy and a clock the
test moves. ``services["sleep"]`` records the failure delays and moves that clock by them
instead of waiting. Every client is 127.0.0.1, so each test starts and ends with an
empty table (the session's gateway counts 127.0.0.1 there too).
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest
from mailcore.auth_service import OPERATIONS
from mailcore.aws import Clients
from mailcore.contracts import Authenticate
from mailcore.dispatch import dispatch
from mailcore.settings import Settings, ThrottlePolicy
from mailcore.store import Store
from mailcore.throttle import Throttle

from gateway.config import GatewayConfig
from gateway.functions import FunctionClient
from gateway.imap.settings import ImapSettings
from gateway.pop3.settings import Pop3Settings
from gateway.server import Gateway
from gateway.smtp.submission import SubmissionService, SubmissionSettings
from tests.unit.test_throttle import Clock

from .conftest import new_user
from .test_smtp import Wire

POLICY = ThrottlePolicy(
    window=300, address_free=3, address_limit=8, account_free=4, account_limit=10, base_delay=1, max_delay=8
)
#: The delays of one address's failures up to its limit (the protocols' own are 0 here).
DELAYS = [0, 0, 0, 1, 2, 4, 8, 8]
RIGHT = "correct horse"


class Harness:
    """The AuthFunction with the test's throttle, every other function as template.yaml
    declares it; and the sleeps the gateway asked for."""

    def __init__(self, functions, store: Store, clock: Clock) -> None:
        self.functions = functions
        self.store = store
        self.clock = clock
        self.slept: list[float] = []
        self.lock = threading.Lock()

    def invoke(self, function: str, event: dict) -> dict:
        if function == "AuthFunction":
            return dispatch(json.loads(json.dumps(event)), OPERATIONS, lambda: self.store)
        return self.functions.invoke(function, event)

    async def sleep(self, seconds: float) -> None:
        with self.lock:
            self.slept.append(seconds)
            self.clock.advance(seconds)  # as if the client had waited

    def take(self) -> list[float]:
        with self.lock:
            slept, self.slept = self.slept, []
        return slept


@pytest.fixture(scope="module")
def throttle_table(local_stack) -> str:
    return local_stack.resources["ThrottleTable"]


@pytest.fixture(scope="module")
def harness(local_stack, function_transport, throttle_table) -> Harness:
    clock = Clock()
    store = Store.build(Settings.from_env(local_stack.environment))
    throttle = Throttle(store.accounts.dynamodb, throttle_table, POLICY, clock)
    return Harness(function_transport, replace(store, throttle=throttle), clock)


@pytest.fixture(scope="module")
def guarded(local_stack, harness, tmp_path_factory) -> Iterator[tuple[Gateway, str]]:
    """A gateway on loopback whose AuthFunction throttles with the small policy."""
    tls_dir = tmp_path_factory.mktemp("throttle-tls")
    config = GatewayConfig(
        bind="127.0.0.1",
        ports={name: 0 for name in ("imap", "pop3", "submissions")},
        hostname="mx.test.example",
        mail_bucket=local_stack.resources["MailBucket"],
    )
    services = {
        "aws": Clients(),
        "sleep": harness.sleep,
        "imap": ImapSettings(auth_failure_delay=0, max_bad_commands=1000, max_commands_before_login=1000),
        "pop3": Pop3Settings(auth_failure_delay=0, max_bad_commands=1000, max_commands_before_login=1000),
        "submission": SubmissionService(settings=SubmissionSettings(auth_failure_delay=0, throttled_limit=3)),
    }
    gw = Gateway(config, FunctionClient(harness), tls_dir=tls_dir, services=services)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="throttled-gateway", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(gw.start(), loop).result(timeout=30)
    yield gw, str(tls_dir / "gateway-cert.pem")
    asyncio.run_coroutine_threadsafe(gw.stop(), loop).result(timeout=30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)


@pytest.fixture
def reset(harness, throttle_table) -> Iterator[Harness]:
    """No counters and no recorded sleeps before the test, no counters after it."""
    _clear(harness.store, throttle_table)
    harness.take()
    yield harness
    _clear(harness.store, throttle_table)


def _clear(store: Store, table: str) -> None:
    dynamodb = store.accounts.dynamodb
    for item in dynamodb.scan(TableName=table).get("Items", []):
        dynamodb.delete_item(TableName=table, Key={"pk": item["pk"]})


def ask(client: Wire, data: str) -> bytes:
    """Send a line; the last line of the answer (IMAP: the tagged one; SMTP: past ``250-``)."""
    client.send(data.encode() + b"\r\n")
    line = client.line()
    while line.startswith(b"* ") or line[3:4] == b"-":
        line = client.line()
    return line


def connect(gw: Gateway, listener: str, cafile: str | None = None) -> Wire:
    client = Wire(gw.listening[listener], timeout=15)
    if cafile:
        context = ssl.create_default_context(cafile=cafile)
        context.check_hostname = False
        client.sock = context.wrap_socket(client.sock)
    client.line()  # the greeting
    return client


# -- one address, hundreds of guesses ---------------------------------------------------------


def test_imap_guesses_are_slowed_then_refused(guarded, reset, store, domain):
    gw, _ = guarded
    user = new_user(store, domain)
    client = connect(gw, "imap")
    answers = [ask(client, f"a{n} LOGIN {user} guess{n}") for n in range(300)]
    assert all(a.endswith(b"NO [AUTHENTICATIONFAILED] Authentication failed") for a in answers[: POLICY.address_limit])
    assert reset.take()[: POLICY.address_limit] == DELAYS
    refused = answers[POLICY.address_limit :]
    assert refused and all(b"NO [UNAVAILABLE] Too many failed logins" in a for a in refused)
    # Refused before any hashing: even the right password, until the window ends.
    assert b"NO [UNAVAILABLE]" in ask(client, f'b LOGIN {user} "{RIGHT}"')
    reset.clock.advance(POLICY.window)
    assert ask(client, f'c LOGIN {user} "{RIGHT}"').startswith(b"c OK")
    client.sock.close()


def test_pop3_guesses_are_slowed_then_refused(guarded, reset, store, domain):
    gw, _ = guarded
    user = new_user(store, domain)
    client = connect(gw, "pop3")
    answers = []
    for n in range(POLICY.address_limit + 20):
        assert ask(client, f"USER {user}").startswith(b"+OK")
        answers.append(ask(client, f"PASS guess{n}"))
    assert answers[: POLICY.address_limit] == [b"-ERR [AUTH] Authentication failed"] * POLICY.address_limit
    assert reset.take()[: POLICY.address_limit] == DELAYS
    assert set(answers[POLICY.address_limit :]) == {b"-ERR [SYS/TEMP] Too many failed logins, try again later"}
    plain = base64.b64encode(f"\0{user}\0{RIGHT}".encode()).decode()
    assert ask(client, f"AUTH PLAIN {plain}").startswith(b"-ERR [SYS/TEMP]")  # AUTH too
    client.sock.close()


def test_submission_guesses_are_slowed_then_refused_and_disconnected(guarded, reset, store, domain):
    gw, cafile = guarded
    user = new_user(store, domain)
    answers = []
    client = connect(gw, "submissions", cafile)
    ask(client, "EHLO client.test")
    for n in range(POLICY.address_limit):
        guess = base64.b64encode(f"\0{user}\0guess{n}".encode()).decode()
        answers.append(ask(client, f"AUTH PLAIN {guess}"))
    assert answers == [b"535 5.7.8 Error: authentication failed"] * POLICY.address_limit
    assert reset.take() == DELAYS
    right = base64.b64encode(f"\0{user}\0{RIGHT}".encode()).decode()
    assert ask(client, f"AUTH PLAIN {right}") == b"454 4.7.0 Temporary authentication failure, try again later"
    assert ask(client, f"AUTH PLAIN {right}").startswith(b"454 4.7.0")
    assert ask(client, f"AUTH PLAIN {right}").startswith(b"421 4.7.0")  # the third in one session
    assert client.closed()
    client.sock.close()


# -- many addresses, one account ---------------------------------------------------------------


def test_guesses_from_many_addresses_do_not_lock_out_a_fresh_one(guarded, reset, store, domain, harness):
    gw, _ = guarded
    user = new_user(store, domain)
    attackers = [f"203.0.113.{n}" for n in range(1, POLICY.account_limit + 1)]
    for address in attackers:
        result = harness.invoke("AuthFunction", Authenticate(user, "guess", address).to_event())
        assert result["error"] == "AUTHENTICATIONFAILED"
    refused = harness.invoke("AuthFunction", Authenticate(user, RIGHT, attackers[0]).to_event())
    assert refused["error"] == "THROTTLED"
    # 127.0.0.1 has no failures: the gateway's client logs in.
    client = connect(gw, "imap")
    assert ask(client, f'a LOGIN {user} "{RIGHT}"').startswith(b"a OK")
    client.sock.close()


def test_an_address_with_failures_is_refused_at_a_besieged_account(guarded, reset, store, domain, harness):
    gw, _ = guarded
    user = new_user(store, domain)
    client = connect(gw, "imap")
    assert b"AUTHENTICATIONFAILED" in ask(client, f"a LOGIN {user} typo")  # 127.0.0.1 fails once
    for n in range(1, POLICY.account_limit):
        harness.invoke("AuthFunction", Authenticate(user, "guess", f"198.51.100.{n}").to_event())
    assert b"NO [UNAVAILABLE]" in ask(client, f'b LOGIN {user} "{RIGHT}"')
    client.sock.close()


# -- windows and resets --------------------------------------------------------------------------


def test_a_success_resets_and_counters_expire(guarded, reset, store, domain):
    gw, _ = guarded
    user = new_user(store, domain)
    client = connect(gw, "imap")
    for n in range(POLICY.address_free + 2):
        ask(client, f"a{n} LOGIN {user} guess{n}")
    assert reset.take() == DELAYS[: POLICY.address_free + 2]
    assert ask(client, f'b LOGIN {user} "{RIGHT}"').startswith(b"b OK")
    client.sock.close()
    client = connect(gw, "imap")
    ask(client, f"c LOGIN {user} guess")
    # The account's counter started again; the address's did not (no laundering by logging in).
    assert reset.take() == [DELAYS[POLICY.address_free + 2]]
    for n in range(POLICY.address_limit):
        ask(client, f"d{n} LOGIN {user} guess{n}")
    assert b"NO [UNAVAILABLE]" in ask(client, f'e LOGIN {user} "{RIGHT}"')
    reset.clock.advance(POLICY.window)  # expired: DynamoDB's TTL may not have removed them yet
    assert ask(client, f'f LOGIN {user} "{RIGHT}"').startswith(b"f OK")
    client.sock.close()
