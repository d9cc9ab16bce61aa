"""Load fixes for moto's server, applied by the local stack (tests, ``make run``, benchmarks).

They change how moto emulates, not what our code does or asks for: the same requests,
the same answers, the same conditions and rollbacks. Measured on moto 5.2.5.

1. ``TransactWriteItems`` deep-copies each table it touches, once per action, so that it
   can roll back: its cost grows with the size of the tables (a delivery's transaction
   touches MessagesTable and MailboxesTable four times). DynamoDB's does not. Here the
   rollback keeps a copy of the touched items only, and restores those.
2. The server runs each request in a thread of its own. Those deep copies iterate tables
   that other requests are changing ("dictionary changed size during iteration": HTTP
   500, and a delivery answered 451), and a rollback restores a snapshot that misses the
   writes of concurrent requests. One lock around every DynamoDB request makes them
   atomic, as DynamoDB's are; the process is bound to one core by its GIL anyway.
3. Every request lists moto's package directory to find its backend (``os.listdir`` and
   an ``isdir`` per entry): listed once here.
4. SQS: each SendMessage reads one queue setting through ``Queue.attributes``, which
   counts the queue's messages three times, reading the clock (a datetime) twice per
   message; each message ReceiveMessage hands out checks its retention period the same
   way three times over. With a backlog of n messages that is O(n) datetimes per message
   sent and O(9n) per message received: the relay benchmark's moto spent 46% of its CPU
   there. Here a count reads the clock once and compares numbers, and the retention
   check reads the one setting it needs.

Applied once per process by :class:`devstack.stack.LocalStack` (fix 2 is a correctness
fix for any concurrent local use; fix 1 keeps a long test session linear).
"""

from __future__ import annotations

import copy
import functools
import threading
import types
from typing import Any

_applied = False


def apply() -> None:
    global _applied
    if _applied:
        return
    _applied = True
    import moto.backends
    import moto.dynamodb.models as models
    from moto.dynamodb.models.table import Table
    from moto.dynamodb.responses import DynamoHandler

    lock = threading.RLock()

    # 3: the package directory does not change while the server runs.
    modules = tuple(moto.backends.list_of_moto_modules())
    moto.backends.list_of_moto_modules = lambda: modules

    # 2: one DynamoDB request at a time.
    call_action = DynamoHandler.call_action

    @functools.wraps(call_action)
    def locked_call_action(self: Any) -> Any:
        with lock:
            return call_action(self)

    DynamoHandler.call_action = locked_call_action  # type: ignore[method-assign]

    # 1: moto's transaction "copies" a table as the table itself, and we keep the items.
    def deepcopy(value: Any, memo: Any = None) -> Any:
        return value if isinstance(value, Table) else copy.deepcopy(value, memo)

    models.copy = types.SimpleNamespace(deepcopy=deepcopy)  # type: ignore[assignment,attr-defined]
    transact = models.DynamoDBBackend.transact_write_items

    @functools.wraps(transact)
    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        with lock:
            saved = _touched_items(self, transact_items)
            try:
                transact(self, transact_items)
            except BaseException:
                for name, key, item in reversed(saved):
                    if item is None:
                        if self.get_item(name, key) is not None:
                            self.tables[name].delete_item(*_key_values(self.tables[name], key))
                    else:
                        self.tables[name].put_item(item.to_json()["Attributes"])
                raise

    models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]

    _tune_sqs()


def _tune_sqs() -> None:
    """Fix 4: the same counts and checks as moto's, with one clock read per scan."""
    from moto.core.utils import unix_time, unix_time_millis
    from moto.sqs.models import Message, Queue, SQSBackend

    def count(messages: list[Message], test: Any) -> int:
        now = unix_time_millis()  # moto's clock (frozen time included), once
        return sum(1 for m in messages if test(m, now))

    # Message.visible is ``now > visible_at``; Message.delayed is ``now < delayed_until``.
    def ready(m: Message, now: float) -> bool:
        return bool(now > m.visible_at and not now < m.delayed_until)

    def messages(self: Queue) -> list[Message]:
        now = unix_time_millis()
        return [m for m in self._messages if ready(m, now)]

    Queue.messages = property(messages)  # type: ignore[assignment,method-assign]
    Queue.approximate_number_of_messages = property(  # type: ignore[assignment,method-assign]
        lambda self: count(self._messages, ready)
    )
    Queue.approximate_number_of_messages_delayed = property(  # type: ignore[assignment,method-assign]
        lambda self: count(self._messages, lambda m, now: now < m.delayed_until)
    )
    Queue.approximate_number_of_messages_not_visible = property(  # type: ignore[assignment,method-assign]
        lambda self: count(self._messages, lambda m, now: not now > m.visible_at)
    )

    def is_message_valid_based_on_retention_period(self: SQSBackend, queue_name: str, message: Message) -> bool:
        retention = self.get_queue(queue_name).message_retention_period  # type: ignore[attr-defined]
        return bool(retention + message.sent_timestamp / 1000 > unix_time())  # type: ignore[operator]

    SQSBackend.is_message_valid_based_on_retention_period = (  # type: ignore[method-assign]
        is_message_valid_based_on_retention_period
    )


def _touched_items(backend: Any, transact_items: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], Any]]:
    """A copy of each item a transaction's actions name (None where there is none yet)."""
    saved: list[tuple[str, dict[str, Any], Any]] = []
    for action in transact_items:
        op = next(iter(action.values()), None)
        if not isinstance(op, dict):
            continue
        table = backend.tables.get(op.get("TableName"))
        if table is None:
            continue
        attrs = op.get("Key") or op.get("Item") or {}
        names = [table.hash_key_attr] + ([table.range_key_attr] if table.range_key_attr else [])
        if not all(n in attrs for n in names):
            continue  # moto will refuse it before writing anything
        key = {n: attrs[n] for n in names}
        saved.append((table.name, key, copy.deepcopy(backend.get_item(table.name, key))))
    return saved


def _key_values(table: Any, key: dict[str, Any]) -> tuple[Any, Any]:
    from moto.dynamodb.models.dynamo_type import DynamoType

    hash_value = DynamoType(key[table.hash_key_attr])
    range_value = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
    return hash_value, range_value
