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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mailcore import dynamo
from mailcore.addresses import Address, normalize_domain, parse_address
from mailcore.errors import AlreadyExists, AuthenticationFailed, InvalidInput, NotFound
from mailcore.passwords import hash_password, needs_rehash, verify_password

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


@dataclass
class Accounts:
    dynamodb: Any
    table: str

    # -- domains ---------------------------------------------------------------

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
        """Return the user's address, or raise AuthenticationFailed (never says which part was wrong)."""
        try:
            addr = parse_address(username)
        except InvalidInput:
            addr = None
        item: dict[str, Any] = {}
        if addr is not None:
            reply = self.dynamodb.get_item(TableName=self.table, Key=dynamo.serialize(_user_key(addr)))
            item = dynamo.deserialize(reply.get("Item", {}))
        stored = item.get("password_hash")
        if not verify_password(stored, password) or addr is None or stored is None:
            raise AuthenticationFailed("authentication failed")
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
        """Which users receive mail sent to ``recipient``: one BatchGetItem.

        Order: the exact user, the exact alias, then the same for the address without
        its subaddress (``user+tag`` -> ``user``), then the domain's catch-all.
        """
        addr = parse_address(recipient)
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
