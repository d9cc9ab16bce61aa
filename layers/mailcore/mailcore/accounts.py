"""Domains, users, aliases and catch-alls, and recipient resolution.

Key design of ``AccountsTable`` (``pk``, ``sk``, both strings):

| item | pk | sk | attributes |
|---|---|---|---|
| domain | ``DOMAINS`` | ``<domain>`` | ``catchall`` (a user's address, optional) |
| user | ``DOMAIN#<domain>`` | ``USER#<local>`` | ``address``, ``password_hash`` |
| alias | ``DOMAIN#<domain>`` | ``ALIAS#<local>`` | ``address``, ``targets`` (users' addresses) |

Resolving a recipient is one BatchGetItem: the domain, and the user and alias items of
the local part and of its base (plus-addressing stripped). Listing domains, or the users
of a domain, is one Query; nothing scans.

Resolutions are cached for a short while in the process (a function container, or the
local stack's one process), as Postfix's proxymap caches table lookups: an SMTP
transaction resolves each recipient at RCPT and again at delivery, and a busy MX sees
the same recipients over and over. A write through any :class:`Accounts` of the
process empties that cache at once; a write elsewhere (another container, ``mailctl``
in another shell) shows after the TTL: ``RESOLVE_CACHE_SECONDS`` (60) for addresses
that reach somebody, ``RESOLVE_NEGATIVE_CACHE_SECONDS`` (10) for the rest; 0 turns
either off.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mailcore import dynamo
from mailcore.addresses import Address, normalize_domain, parse_address
from mailcore.errors import AlreadyExists, AuthenticationFailed, InvalidInput, NotFound
from mailcore.passwords import VERIFIED, VerifiedPasswords, hash_password, needs_rehash

DOMAINS = "DOMAINS"


def _domain_pk(domain: str) -> str:
    return f"DOMAIN#{domain}"


def _user_key(address: Address) -> dict[str, str]:
    return {"pk": _domain_pk(address.domain), "sk": f"USER#{address.local}"}


def _alias_key(address: Address) -> dict[str, str]:
    return {"pk": _domain_pk(address.domain), "sk": f"ALIAS#{address.local}"}


@dataclass(frozen=True)
class Resolution:
    """Where mail for a recipient goes.

    ``local_domain`` is False for a domain we do not serve (relay territory); ``users`` is
    empty for an unknown recipient of a local domain.
    """

    recipient: str
    local_domain: bool
    users: list[str] = field(default_factory=list)


#: How long a resolution is reused: one that reaches somebody, one that does not.
POSITIVE_TTL = 60.0
NEGATIVE_TTL = 10.0
#: Bounds the memory of a dictionary attack on RCPT (each unknown address is an entry).
MAX_CACHED = 10_000


class ResolutionCache:
    """Recent resolutions by normalized address, each kept for its TTL.

    :meth:`invalidate` empties it and starts a new generation; a lookup that began in an
    older generation (it read DynamoDB before the write) is not stored.
    """

    def __init__(
        self,
        positive_ttl: float = POSITIVE_TTL,
        negative_ttl: float = NEGATIVE_TTL,
        max_entries: int = MAX_CACHED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.positive_ttl = positive_ttl
        self.negative_ttl = negative_ttl
        self.max_entries = max_entries
        self.clock = clock
        self.generation = 0
        self._entries: dict[str, tuple[float, Resolution]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ResolutionCache:
        env = os.environ if env is None else env
        return cls(
            positive_ttl=float(env.get("RESOLVE_CACHE_SECONDS") or POSITIVE_TTL),
            negative_ttl=float(env.get("RESOLVE_NEGATIVE_CACHE_SECONDS") or NEGATIVE_TTL),
        )

    def get(self, address: str) -> Resolution | None:
        with self._lock:
            entry = self._entries.get(address)
            if entry is None:
                return None
            if entry[0] <= self.clock():
                del self._entries[address]
                return None
            cached = entry[1]
        return Resolution(cached.recipient, cached.local_domain, list(cached.users))

    def put(self, address: str, resolution: Resolution, generation: int) -> None:
        ttl = self.positive_ttl if resolution.users else self.negative_ttl
        if ttl <= 0:
            return
        with self._lock:
            if generation != self.generation:
                return  # an account changed while this was being looked up
            self._entries.pop(address, None)
            while len(self._entries) >= self.max_entries:
                del self._entries[next(iter(self._entries))]  # the oldest
            self._entries[address] = (self.clock() + ttl, resolution)

    def invalidate(self) -> None:
        with self._lock:
            self.generation += 1
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _writes(method: _Method) -> _Method:
    """A method that changes accounts: the cached resolutions go, whatever its outcome
    (a write that timed out may still have happened)."""

    @functools.wraps(method)
    def wrapper(self: Accounts, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        finally:
            self._changed()

    return wrapper  # type: ignore[return-value]


_shared: dict[str, ResolutionCache] = {}
_shared_lock = threading.Lock()


def shared_cache(table: str) -> ResolutionCache:
    """The process's cache for ``table``, made from the environment on first use."""
    with _shared_lock:
        if table not in _shared:
            _shared[table] = ResolutionCache.from_env()
        return _shared[table]


@dataclass
class Accounts:
    dynamodb: Any
    table: str
    #: None: the process's cache for this table (:func:`shared_cache`).
    cache: ResolutionCache | None = field(default=None, repr=False)
    #: Logins this container verified lately (mailcore.passwords.VerifiedPasswords).
    verified: VerifiedPasswords = field(default=VERIFIED, repr=False)

    def __post_init__(self) -> None:
        if self.cache is None:
            self.cache = shared_cache(self.table)

    def _changed(self) -> None:
        """After any write: resolutions may differ now."""
        assert self.cache is not None
        self.cache.invalidate()

    # -- domains ---------------------------------------------------------------

    @_writes
    def add_domain(self, domain: str) -> str:
        domain = normalize_domain(domain)
        try:
            self.dynamodb.put_item(
                TableName=self.table,
                Item=dynamo.serialize({"pk": DOMAINS, "sk": domain, "domain": domain}),
                ConditionExpression="attribute_not_exists(pk)",
            )
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            raise AlreadyExists(f"domain {domain} exists") from None
        return domain

    def list_domains(self) -> list[dict[str, Any]]:
        return list(
            dynamo.query(
                self.dynamodb,
                TableName=self.table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues=dynamo.values(pk=DOMAINS),
            )
        )

    @_writes
    def remove_domain(self, domain: str) -> None:
        domain = normalize_domain(domain)
        if self._domain_members(domain, limit=1):
            raise InvalidInput(f"domain {domain} still has users or aliases")
        try:
            self.dynamodb.delete_item(
                TableName=self.table,
                Key=dynamo.serialize({"pk": DOMAINS, "sk": domain}),
                ConditionExpression="attribute_exists(pk)",
            )
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            raise NotFound(f"no domain {domain}") from None

    @_writes
    def set_catchall(self, domain: str, target: str | None) -> None:
        """Mail to unknown local parts of ``domain`` goes to user ``target`` (None: refuse it)."""
        domain = normalize_domain(domain)
        if target is not None:
            target = str(self._existing_user(parse_address(target)))
        update = "SET catchall = :t" if target else "REMOVE catchall"
        try:
            self.dynamodb.update_item(
                TableName=self.table,
                Key=dynamo.serialize({"pk": DOMAINS, "sk": domain}),
                UpdateExpression=update,
                ConditionExpression="attribute_exists(pk)",
                **({"ExpressionAttributeValues": dynamo.values(t=target)} if target else {}),
            )
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            raise NotFound(f"no domain {domain}") from None

    def _require_domain(self, domain: str) -> None:
        reply = self.dynamodb.get_item(TableName=self.table, Key=dynamo.serialize({"pk": DOMAINS, "sk": domain}))
        if "Item" not in reply:
            raise NotFound(f"no domain {domain}")

    def _domain_members(self, domain: str, prefix: str = "", limit: int | None = None) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :p)" if prefix else "pk = :pk",
            "ExpressionAttributeValues": dynamo.values(pk=_domain_pk(domain), **({"p": prefix} if prefix else {})),
        }
        if limit:
            kwargs["Limit"] = limit
            return [dynamo.deserialize(i) for i in self.dynamodb.query(**kwargs).get("Items", [])]
        return list(dynamo.query(self.dynamodb, **kwargs))

    # -- users -----------------------------------------------------------------

    def add_user(self, address: str, password: str) -> Address:
        addr = parse_address(address)
        if addr.base != addr:
            raise InvalidInput(f"{addr}: a user name may not contain a subaddress separator")
        self._require_domain(addr.domain)
        item = {**_user_key(addr), "address": str(addr), "password_hash": hash_password(password)}
        self._put_unless_taken(addr, item, _alias_key(addr))
        return addr

    @_writes
    def _put_unless_taken(self, addr: Address, item: dict[str, Any], other: dict[str, str]) -> None:
        """Put a user or alias item unless the address is taken by either kind: one transaction."""
        absent = "attribute_not_exists(pk)"
        try:
            dynamo.transact(
                self.dynamodb,
                [
                    {"Put": {"TableName": self.table, "Item": dynamo.serialize(item), "ConditionExpression": absent}},
                    {
                        "ConditionCheck": {
                            "TableName": self.table,
                            "Key": dynamo.serialize(other),
                            "ConditionExpression": absent,
                        }
                    },
                ],
            )
        except self.dynamodb.exceptions.TransactionCanceledException:
            raise AlreadyExists(f"{addr} exists") from None

    def set_password(self, address: str, password: str) -> None:
        addr = parse_address(address)
        self._update_hash(addr, hash_password(password), must_exist=True)

    def _update_hash(self, addr: Address, password_hash: str, must_exist: bool) -> None:
        try:
            self.dynamodb.update_item(
                TableName=self.table,
                Key=dynamo.serialize(_user_key(addr)),
                UpdateExpression="SET password_hash = :h",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues=dynamo.values(h=password_hash),
            )
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            if must_exist:
                raise NotFound(f"no user {addr}") from None

    def list_users(self, domain: str) -> list[str]:
        domain = normalize_domain(domain)
        return [item["address"] for item in self._domain_members(domain, "USER#")]

    @_writes
    def remove_user(self, address: str) -> None:
        addr = parse_address(address)
        try:
            self.dynamodb.delete_item(
                TableName=self.table,
                Key=dynamo.serialize(_user_key(addr)),
                ConditionExpression="attribute_exists(pk)",
            )
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            raise NotFound(f"no user {addr}") from None

    def _existing_user(self, addr: Address) -> Address:
        if "Item" not in self.dynamodb.get_item(TableName=self.table, Key=dynamo.serialize(_user_key(addr))):
            raise NotFound(f"no user {addr}")
        return addr

    def authenticate(self, username: str, password: str) -> str:
        """Return the user's address, or raise AuthenticationFailed (never says which part
        was wrong). One GetItem (none for a name no user can have), then :meth:`verify`."""
        key = self.credentials_key(username)
        item: dict[str, Any] = {}
        if key is not None:
            reply = self.dynamodb.get_item(TableName=self.table, Key=dynamo.serialize(key))
            item = dynamo.deserialize(reply.get("Item", {}))
        return self.verify(username, password, item)

    @staticmethod
    def credentials_key(username: str) -> dict[str, str] | None:
        """The key of the item holding ``username``'s password hash; None for a name no
        user can have."""
        try:
            return _user_key(parse_address(username))
        except InvalidInput:
            return None

    def verify(self, username: str, password: str, item: Mapping[str, Any]) -> str:
        """Check ``password`` against the user's item as read (empty: no such user, which
        still costs a full verification); the user's address, or AuthenticationFailed."""
        stored = item.get("password_hash")
        if not self.verified.verify(stored, password) or stored is None:
            raise AuthenticationFailed("authentication failed")
        addr = parse_address(username)
        if needs_rehash(stored):
            self._update_hash(addr, hash_password(password), must_exist=False)
        return str(addr)

    # -- aliases ---------------------------------------------------------------

    def add_alias(self, alias: str, targets: list[str]) -> Address:
        """An alias delivers to one or more existing users; it may not shadow a user."""
        addr = parse_address(alias)
        if not targets:
            raise InvalidInput("an alias needs at least one target")
        users = sorted({str(self._existing_user(parse_address(t))) for t in targets})
        self._require_domain(addr.domain)
        item = {**_alias_key(addr), "address": str(addr), "targets": users}
        self._put_unless_taken(addr, item, _user_key(addr))
        return addr

    def list_aliases(self, domain: str) -> list[dict[str, Any]]:
        domain = normalize_domain(domain)
        return [{"address": i["address"], "targets": i["targets"]} for i in self._domain_members(domain, "ALIAS#")]

    @_writes
    def remove_alias(self, alias: str) -> None:
        addr = parse_address(alias)
        try:
            self.dynamodb.delete_item(
                TableName=self.table,
                Key=dynamo.serialize(_alias_key(addr)),
                ConditionExpression="attribute_exists(pk)",
            )
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            raise NotFound(f"no alias {addr}") from None

    # -- resolution --------------------------------------------------------------

    def resolve(self, recipient: str) -> Resolution:
        """Which users receive mail sent to ``recipient``: one BatchGetItem, or none
        while the answer is in the cache (see the module's doc).

        Order: the exact user, the exact alias, then the same for the address without
        its subaddress (``user+tag`` -> ``user``), then the domain's catch-all.
        """
        addr = parse_address(recipient)
        assert self.cache is not None
        key = str(addr)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        generation = self.cache.generation
        resolution = self._lookup(addr)
        self.cache.put(key, resolution, generation)
        return Resolution(resolution.recipient, resolution.local_domain, list(resolution.users))

    def _lookup(self, addr: Address) -> Resolution:
        candidates = [addr] if addr.base == addr else [addr, addr.base]
        keys = [{"pk": DOMAINS, "sk": addr.domain}]
        for candidate in candidates:
            keys += [_user_key(candidate), _alias_key(candidate)]
        items = {(i["pk"], i["sk"]): i for i in dynamo.batch_get(self.dynamodb, self.table, keys)}
        domain = items.get((DOMAINS, addr.domain))
        if domain is None:
            return Resolution(str(addr), local_domain=False)
        for candidate in candidates:
            user = items.get(tuple(_user_key(candidate).values()))  # type: ignore[arg-type]
            if user:
                return Resolution(str(addr), True, [user["address"]])
            alias = items.get(tuple(_alias_key(candidate).values()))  # type: ignore[arg-type]
            if alias:
                return Resolution(str(addr), True, list(alias["targets"]))
        catchall = domain.get("catchall")
        return Resolution(str(addr), True, [catchall] if catchall else [])
