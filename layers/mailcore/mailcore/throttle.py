"""Authentication throttling shared by every gateway copy: failure counters in DynamoDB.

The gateway never touches DynamoDB, and any of its copies behind the load balancer may
take a guesser's next connection, so the counters live here, in the AuthFunction, in
``ThrottleTable`` (``pk`` string):

| counter | pk | attributes |
|---|---|---|
| a client address | ``ADDR#<IPv4>``, ``ADDR#<IPv6 /64>`` | ``failures``, ``expires``, ``not_before`` |
| an account | ``ACCT#<normalized address>`` | ``failures``, ``expires`` |

An IPv6 client is counted per /64 (one subscriber's allocation, RFC 6177 §2: a guesser
owns all of it), an IPv4-mapped IPv6 address as its IPv4 address. A counter counts the
failures of a fixed window that starts with its first failure; ``expires`` (epoch
seconds) is its end and the table's TTL attribute. DynamoDB deletes expired items when it
gets to it (moto never), so a read treats an expired counter as absent and a failure on
one starts a new window.

Policy (:class:`mailcore.settings.ThrottlePolicy`): per address first, so that a guesser
cannot lock a user out of every address. Past the free failures each failure is answered
late (the ``delay`` of the result, exponential and capped) and the next try from that
address waits as long (``not_before``: a try before it is refused, so parallel
connections gain nothing); at the address's limit the address is refused until the
window ends. An account past its limit is refused to the addresses that have failures;
a fresh address may still try (its failure is answered after the longest delay). A
success resets the account's counter only: were the address's reset too, a guesser with
an account of their own could log into it between guesses and be a fresh address again
(a shared NAT address pays for that by counting its users' typos for one window). A
refused try ends before the password is verified, so refused guesses cost no argon2 work.

Costs, in DynamoDB requests per ``Authenticate`` (the counters and the user's item are
read together: BatchGetItem spans tables):

- refused: 1 (the BatchGetItem);
- success: 1, plus 1 DeleteItem of the account's counter when there was one (and the
  UpdateItem of a rehash, as without throttling);
- failure: 3 (the BatchGetItem, one UpdateItem or PutItem per counter); a counter that
  expired or appeared between the read and the write costs one request more.

Concurrent failures may count one failure less or set an earlier ``not_before`` (the
counters are read once and written without a transaction): the bounds are approximate by
a request or two, never off by a window.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from mailcore import dynamo
from mailcore.addresses import parse_address
from mailcore.errors import InvalidInput
from mailcore.settings import ThrottlePolicy

log = logging.getLogger(__name__)

#: A client address that is not an IP address (a test's, or "unknown") is kept this long.
_MAX_RAW_ADDRESS = 64


def address_key(client_address: str) -> str | None:
    """The counter of a client address: IPv6 per /64, IPv4-mapped as IPv4; None when unknown."""
    text = client_address.strip().lower()
    if not text:
        return None
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])  # an IPv6 zone index names no client
    except ValueError:
        return f"ADDR#{text[:_MAX_RAW_ADDRESS]}"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"ADDR#{ip.ipv4_mapped}"
        return f"ADDR#{ipaddress.IPv6Network((ip, 64), strict=False)}"
    return f"ADDR#{ip}"


def account_key(username: str) -> str | None:
    """The counter of an account: the normalized address; None for a name no user can have."""
    try:
        return f"ACCT#{parse_address(username)}"
    except InvalidInput:
        return None


@dataclass(frozen=True)
class Counter:
    failures: int
    expires: int
    not_before: int = 0


@dataclass(frozen=True)
class Check:
    """What :meth:`Throttle.check` read: the live counters, and whether to refuse."""

    address_key: str | None
    account_key: str | None
    address: Counter | None
    account: Counter | None
    #: Keys with an item in the table, expired or not.
    stored: tuple[str, ...] = ()
    #: Seconds until a try may succeed; 0: go on and check the password.
    retry_after: int = 0
    #: The user's item, when :meth:`Throttle.check` read it in the same request ({}: none).
    user: Mapping[str, Any] = field(default_factory=dict)

    @property
    def refused(self) -> bool:
        return self.retry_after > 0


@dataclass
class Throttle:
    dynamodb: Any
    table: str
    policy: ThrottlePolicy = field(default_factory=ThrottlePolicy)
    #: Epoch seconds; tests move it past a window.
    clock: Callable[[], float] = time.time

    def check(
        self, client_address: str, username: str, user: tuple[str, Mapping[str, str]] | None = None
    ) -> Check:
        """Read both counters and decide whether this try may go on. ``user``: the (table,
        key) of the user's item, read in the same BatchGetItem (BatchGetItem spans tables),
        so that a login costs one read however it ends."""
        akey, ckey = address_key(client_address), account_key(username)
        wanted: dict[str, list[Mapping[str, str]]] = {self.table: [{"pk": k} for k in (akey, ckey) if k is not None]}
        if user is not None:
            wanted.setdefault(user[0], []).append(user[1])
        found = dynamo.batch_get_tables(self.dynamodb, wanted)
        items = {i["pk"]: i for i in found.get(self.table, [])}
        user_item = next(iter(found.get(user[0], []) if user is not None else []), {})
        now = self.clock()
        live = {
            pk: Counter(int(i.get("failures", 0)), int(i["expires"]), int(i.get("not_before", 0)))
            for pk, i in items.items()
            if int(i.get("expires", 0)) > now
        }
        address = live.get(akey) if akey else None
        account = live.get(ckey) if ckey else None
        check = Check(akey, ckey, address, account, tuple(items), user=user_item)
        return _with_retry_after(check, self.policy, now)

    def failed(self, check: Check) -> int:
        """Count a failure on both counters; the seconds to wait before answering it."""
        policy, now = self.policy, self.clock()
        address_failures = (check.address.failures if check.address else 0) + 1
        account_failures = (check.account.failures if check.account else 0) + 1
        delay = max(
            policy.delay(address_failures, policy.address_free),
            policy.delay(account_failures, policy.account_free),
        )
        if check.account is not None and check.account.failures >= policy.account_limit:
            delay = policy.max_delay  # a fresh address at a besieged account
        if check.address_key is not None:
            self._count(check.address_key, check.address is not None, now, {"not_before": int(now) + delay})
        if check.account_key is not None:
            self._count(check.account_key, check.account is not None, now, {})
        return delay

    def succeeded(self, check: Check) -> None:
        """A success resets the account's counter (one DeleteItem; none without a counter)."""
        if check.account_key is not None and check.account_key in check.stored:
            self.dynamodb.delete_item(TableName=self.table, Key=dynamo.serialize({"pk": check.account_key}))

    def _count(self, key: str, live: bool, now: float, attributes: dict[str, int]) -> None:
        """Add one failure to a live counter, or start a window; if the item changed since
        it was read (expired, or another failure created it), the other way once."""
        attempts = (self._add, self._start) if live else (self._start, self._add)
        for attempt in attempts:
            try:
                attempt(key, now, attributes)
                return
            except self.dynamodb.exceptions.ConditionalCheckFailedException:
                continue
        log.warning("throttle counter %s changed under two writes; this failure is not counted", key)

    def _add(self, key: str, now: float, attributes: dict[str, int]) -> None:
        sets = " SET " + ", ".join(f"{name} = :{name}" for name in attributes) if attributes else ""
        self.dynamodb.update_item(
            TableName=self.table,
            Key=dynamo.serialize({"pk": key}),
            UpdateExpression="ADD failures :one" + sets,
            ConditionExpression="expires > :now",
            ExpressionAttributeValues=dynamo.values(one=1, now=int(now), **attributes),
        )

    def _start(self, key: str, now: float, attributes: dict[str, int]) -> None:
        item = {"pk": key, "failures": 1, "expires": int(now) + self.policy.window, **attributes}
        self.dynamodb.put_item(
            TableName=self.table,
            Item=dynamo.serialize(item),
            ConditionExpression="attribute_not_exists(pk) OR expires <= :now",
            ExpressionAttributeValues=dynamo.values(now=int(now)),
        )


def _with_retry_after(check: Check, policy: ThrottlePolicy, now: float) -> Check:
    """Per address first: its limit, then its ``not_before``; then the account's limit,
    which refuses only addresses that have failures (or that are unknown)."""
    wait = 0.0
    address, account = check.address, check.account
    if address is not None:
        if address.failures >= policy.address_limit:
            wait = address.expires - now
        elif address.not_before > now:
            wait = address.not_before - now
    known_failing = address is not None or check.address_key is None
    if not wait and account is not None and account.failures >= policy.account_limit and known_failing:
        wait = account.expires - now
    if wait <= 0:
        return check
    return replace(check, retry_after=max(1, math.ceil(wait)))
