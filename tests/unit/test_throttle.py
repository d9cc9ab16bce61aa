"""The authentication throttle (mailcore.throttle) on the local stack's ThrottleTable:
keys, policy, windows and their expiry by a clock the test moves, and the DynamoDB
requests each outcome costs (the counts its module docstring states)."""

from __future__ import annotations

import secrets
import time
from dataclasses import replace

import pytest
from mailcore.accounting import count_requests
from mailcore.auth_service import OPERATIONS
from mailcore.contracts import Authenticate
from mailcore.dispatch import dispatch
from mailcore.settings import Settings, ThrottlePolicy
from mailcore.store import Store
from mailcore.throttle import Throttle, account_key, address_key

from tests.integration.conftest import new_user

#: Small numbers: two free failures per address, refused at the sixth; an account
#: refused to failing addresses at its eighth failure; delays 1, 2, 4, 4 ... seconds.
POLICY = ThrottlePolicy(
    window=60, address_free=2, address_limit=6, account_free=3, account_limit=8, base_delay=1, max_delay=4
)
RIGHT = "correct horse"


class Clock:
    """Epoch seconds that move only when the test says."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def throttled(store, local_stack, clock) -> Store:
    """The store as the AuthFunction has it, with the small policy and the test's clock."""
    throttle = Throttle(store.accounts.dynamodb, local_stack.resources["ThrottleTable"], POLICY, clock)
    return replace(store, throttle=throttle)


def random_ipv4() -> str:
    return "10." + ".".join(str(b) for b in secrets.token_bytes(3))


def login(store: Store, user: str, password: str, address: str) -> dict:
    return dispatch(Authenticate(user, password, address).to_event(), OPERATIONS, lambda: store)


# -- keys ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client", "key"),
    [
        ("192.0.2.7", "ADDR#192.0.2.7"),
        ("::ffff:192.0.2.7", "ADDR#192.0.2.7"),  # IPv4-mapped: the IPv4 client
        ("2001:db8:1:2:3:4:5:6", "ADDR#2001:db8:1:2::/64"),
        ("2001:DB8:1:2:ffff::1", "ADDR#2001:db8:1:2::/64"),  # the same /64
        ("fe80::1%eth0", "ADDR#fe80::/64"),
        ("unknown", "ADDR#unknown"),
        ("", None),
    ],
)
def test_address_keys(client, key):
    assert address_key(client) == key


def test_account_keys_are_normalized_addresses():
    assert account_key(" Bob@Example.COM ") == "ACCT#bob@example.com"
    assert account_key("no-at-sign") is None


def test_delays_grow_exponentially_after_the_free_failures_and_are_capped():
    assert [POLICY.delay(n, POLICY.address_free) for n in range(1, 8)] == [0, 0, 1, 2, 4, 4, 4]
    assert ThrottlePolicy().delay(1000, 0) == ThrottlePolicy().max_delay


# -- the table and the settings ----------------------------------------------------------


def test_the_auth_function_gets_the_throttle_table_from_the_template(local_stack):
    table = local_stack.resources["ThrottleTable"]
    environment = dict(local_stack.functions["AuthFunction"].environment)
    assert environment["THROTTLE_TABLE"] == table
    store = Store.build(Settings.from_env({**local_stack.environment, **environment}))
    assert store.throttle is not None and store.throttle.table == table
    ttl = store.accounts.dynamodb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires"}
    # Other functions (and mailctl) have no throttle.
    assert Store.build(Settings.from_env(local_stack.environment)).throttle is None


def test_policy_settings_from_the_environment():
    env = {"ACCOUNTS_TABLE": "a", "MAILBOXES_TABLE": "m", "MESSAGES_TABLE": "x", "MAIL_BUCKET": "b"}
    assert Settings.from_env(env).throttle == ThrottlePolicy()
    settings = Settings.from_env({**env, "THROTTLE_ADDRESS_LIMIT": "7", "THROTTLE_MAX_DELAY": "9"})
    assert settings.throttle == replace(ThrottlePolicy(), address_limit=7, max_delay=9)


# -- one address --------------------------------------------------------------------------


def test_one_address_is_slowed_then_refused_until_its_window_ends(throttled, domain, clock):
    user, address = new_user(throttled, domain), random_ipv4()
    delays = []
    for _ in range(POLICY.address_limit):
        with count_requests() as counter:
            result = login(throttled, user, "guess", address)
        assert result["error"] == "AUTHENTICATIONFAILED"
        # One BatchGetItem of both counters and the user's item, one write per counter.
        assert counter.total == 3 and counter.counts["dynamodb.BatchGetItem"] == 1
        delays.append(result["delay"])
        clock.advance(result["delay"])  # a client that waits for the answer
    assert delays == [0, 0, 1, 2, 4, 4]
    for password in ("guess", RIGHT):  # refused before the password is looked at
        with count_requests() as counter:
            result = login(throttled, user, password, address)
        assert result["ok"] is False and result["error"] == "THROTTLED"
        assert 0 < result["retry_after"] <= POLICY.window
        assert counter.snapshot() == {"dynamodb.BatchGetItem": 1}
    clock.advance(result["retry_after"])
    assert login(throttled, user, RIGHT, address)["ok"] is True


def test_a_try_before_the_delay_is_over_is_refused(throttled, domain, clock):
    user, address = new_user(throttled, domain), random_ipv4()
    for _ in range(POLICY.address_free + 1):
        result = login(throttled, user, "guess", address)
    assert result["delay"] == 1
    # A parallel connection that does not wait gains nothing, not even with the password.
    early = login(throttled, user, RIGHT, address)
    assert early["error"] == "THROTTLED" and early["retry_after"] == 1
    clock.advance(1)
    assert login(throttled, user, RIGHT, address)["ok"] is True


def test_ipv6_clients_are_counted_per_64(throttled, domain, clock):
    user = new_user(throttled, domain)
    prefix = "2001:db8:" + ":".join(secrets.token_hex(2) for _ in range(2))
    for host in range(POLICY.address_limit):
        result = login(throttled, user, "guess", f"{prefix}::{host + 1:x}")
        clock.advance(result["delay"])
    assert login(throttled, user, RIGHT, f"{prefix}:ffff::1")["error"] == "THROTTLED"
    assert login(throttled, user, RIGHT, "2001:db8:ffff:" + secrets.token_hex(2) + "::1")["ok"] is True


# -- windows and resets ----------------------------------------------------------------------


def test_counters_expire_and_a_failure_after_expiry_starts_a_new_window(throttled, domain, clock, local_stack):
    user, address = new_user(throttled, domain), random_ipv4()
    for _ in range(POLICY.address_limit):
        clock.advance(login(throttled, user, "guess", address)["delay"])
    assert login(throttled, user, "guess", address)["error"] == "THROTTLED"
    clock.advance(POLICY.window)  # moto never deletes expired items: reads must ignore them
    with count_requests() as counter:
        result = login(throttled, user, "guess", address)
    assert result["error"] == "AUTHENTICATIONFAILED" and result["delay"] == 0
    assert counter.counts["dynamodb.PutItem"] == 2 and counter.total == 3  # new windows, no retry
    item = throttled.accounts.dynamodb.get_item(
        TableName=local_stack.resources["ThrottleTable"], Key={"pk": {"S": f"ADDR#{address}"}}
    )["Item"]
    assert item["failures"] == {"N": "1"} and int(item["expires"]["N"]) == int(clock.now) + POLICY.window


def test_a_success_resets_the_account_counter_only(throttled, domain, clock, local_stack):
    user, address = new_user(throttled, domain), random_ipv4()
    for _ in range(POLICY.address_free + 2):
        clock.advance(login(throttled, user, "guess", address)["delay"])
    with count_requests() as counter:
        assert login(throttled, user, RIGHT, address)["ok"] is True
    assert counter.snapshot() == {"dynamodb.BatchGetItem": 1, "dynamodb.DeleteItem": 1}
    table = local_stack.resources["ThrottleTable"]
    get = throttled.accounts.dynamodb.get_item
    assert "Item" not in get(TableName=table, Key={"pk": {"S": f"ACCT#{user}"}})
    assert "Item" in get(TableName=table, Key={"pk": {"S": f"ADDR#{address}"}})
    assert login(throttled, user, "guess", random_ipv4())["delay"] == 0  # the account counts afresh
    # ... but a success does not launder the address: a guesser logging into an account of
    # their own between guesses stays slowed.
    assert login(throttled, user, "guess", address)["delay"] > 0


def test_a_success_without_counters_costs_one_request_more(throttled, domain):
    user = new_user(throttled, domain)
    with count_requests() as counter:
        assert login(throttled, user, RIGHT, random_ipv4()) == {"ok": True, "user": user}
    assert counter.snapshot() == {"dynamodb.BatchGetItem": 1}  # the counters and the user's item together


# -- one account from many addresses ------------------------------------------------------------


def test_a_besieged_account_refuses_failing_addresses_but_not_a_fresh_one(throttled, domain, clock):
    user = new_user(throttled, domain)
    attackers = [random_ipv4() for _ in range(POLICY.account_limit)]
    for address in attackers:  # one guess each: no address reaches its own limits
        result = login(throttled, user, "guess", address)
        clock.advance(result["delay"])
    assert result["delay"] == POLICY.max_delay
    # Every address that failed is refused now, whatever it sends.
    for address in attackers[:3]:
        refused = login(throttled, user, RIGHT, address)
        assert refused["error"] == "THROTTLED" and refused["retry_after"] > 0
    # A fresh address may still try: a wrong guess is answered after the longest delay...
    fresh_guess = login(throttled, user, "guess", random_ipv4())
    assert fresh_guess["error"] == "AUTHENTICATIONFAILED" and fresh_guess["delay"] == POLICY.max_delay
    # ... and the owner, from an address of its own, logs in; that resets the account.
    assert login(throttled, user, RIGHT, random_ipv4())["ok"] is True
    assert login(throttled, user, RIGHT, attackers[0])["ok"] is True


def test_a_name_no_user_can_have_is_counted_per_address_only(throttled, clock):
    address = random_ipv4()
    with count_requests() as counter:
        result = login(throttled, "no-at-sign", "guess", address)
    assert result["error"] == "AUTHENTICATIONFAILED"
    assert counter.snapshot() == {"dynamodb.BatchGetItem": 1, "dynamodb.PutItem": 1}
