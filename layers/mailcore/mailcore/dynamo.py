"""Small helpers over the low-level DynamoDB client: typed items, paging, transactions."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

_SER = TypeSerializer()
_DESER = TypeDeserializer()

#: DynamoDB limits: TransactWriteItems takes at most 100 actions, BatchGetItem 100 keys.
MAX_TRANSACT_ITEMS = 100
MAX_BATCH_GET = 100


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, set):
        return sorted(_plain(v) for v in value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def serialize(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _SER.serialize(v) for k, v in item.items() if v is not None}


def deserialize(item: dict[str, Any]) -> dict[str, Any]:
    """Wire format to plain Python: numbers become int/float, sets sorted lists."""
    return {k: _plain(_DESER.deserialize(v)) for k, v in item.items()}


def values(**kwargs: Any) -> dict[str, Any]:
    """ExpressionAttributeValues from keyword arguments: ``values(n=1)`` -> ``{":n": ...}``."""
    return {f":{k}": _SER.serialize(v) for k, v in kwargs.items()}


def projection(names: Sequence[str]) -> dict[str, Any]:
    """ProjectionExpression for ``names``, safe for reserved words such as ``size``."""
    return {
        "ProjectionExpression": ", ".join(f"#{n}" for n in names),
        "ExpressionAttributeNames": {f"#{n}": n for n in names},
    }


def query_pages(client: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """The raw pages of a Query (one request per page of up to 1 MB)."""
    while True:
        page = client.query(**kwargs)
        yield page
        last = page.get("LastEvaluatedKey")
        if not last:
            return
        kwargs["ExclusiveStartKey"] = last


def query(client: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Every item of a Query, page by page."""
    for page in query_pages(client, **kwargs):
        for item in page.get("Items", []):
            yield deserialize(item)


def batch_get(client: Any, table: str, keys: Sequence[dict[str, Any]], **kwargs: Any) -> list[dict[str, Any]]:
    """BatchGetItem in chunks of 100 keys, retrying unprocessed keys. Order is not kept."""
    found: list[dict[str, Any]] = []
    for start in range(0, len(keys), MAX_BATCH_GET):
        found += batch_get_tables(client, {table: keys[start : start + MAX_BATCH_GET]}, **kwargs).get(table, [])
    return found


def batch_get_tables(
    client: Any, wanted: Mapping[str, Sequence[Mapping[str, Any]]], **kwargs: Any
) -> dict[str, list[dict[str, Any]]]:
    """One BatchGetItem over several tables (at most 100 keys in all; BatchGetItem spans
    tables), retrying unprocessed keys: table -> the items found. Order is not kept."""
    request: dict[str, Any] = {
        table: {"Keys": [serialize(dict(k)) for k in keys], **kwargs} for table, keys in wanted.items() if keys
    }
    found: dict[str, list[dict[str, Any]]] = {}
    while request:
        reply = client.batch_get_item(RequestItems=request)
        for table, items in reply["Responses"].items():
            found.setdefault(table, []).extend(deserialize(i) for i in items)
        request = reply.get("UnprocessedKeys") or {}
    return found


def transact(client: Any, actions: Sequence[dict[str, Any]]) -> None:
    """TransactWriteItems: all of ``actions`` or none (callers keep them under 100)."""
    if len(actions) > MAX_TRANSACT_ITEMS:
        raise ValueError("a transaction takes at most 100 actions")
    client.transact_write_items(TransactItems=list(actions))


def cancellation_codes(error: Exception) -> list[str]:
    """The per-action reasons of a TransactionCanceledException ("None" where it passed)."""
    response = getattr(error, "response", {}) or {}
    reasons = response.get("CancellationReasons") or []
    return [r.get("Code", "None") for r in reasons]


def error_code(error: Exception) -> str:
    response = getattr(error, "response", {}) or {}
    return str(response.get("Error", {}).get("Code", ""))
