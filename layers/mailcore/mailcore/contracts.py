"""Payloads between the gateway and the functions. Standard library only: the gateway
imports this module without boto3 in the loop.

Every event is a JSON object whose ``op`` field names a request dataclass below; every
result is a JSON object with ``ok``. A refused request answers ``{"ok": false, "error":
<code>, "message": ...}`` with a code of :mod:`mailcore.errors`; a function that raises
is a temporary failure, never a refusal.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar


class ContractError(ValueError):
    """An event that does not fit its contract."""


@dataclass(frozen=True)
class Request:
    op: ClassVar[str] = ""

    def to_event(self) -> dict[str, Any]:
        return {"op": self.op, **dataclasses.asdict(self)}


# -- auth function ------------------------------------------------------------------


@dataclass(frozen=True)
class Authenticate(Request):
    op: ClassVar[str] = "authenticate"
    username: str
    password: str


# -- ingest function ----------------------------------------------------------------


@dataclass(frozen=True)
class Resolve(Request):
    """May mail for ``recipient`` be accepted here (RCPT TO)?"""

    op: ClassVar[str] = "resolve"
    recipient: str


@dataclass(frozen=True)
class Deliver(Request):
    """Deliver the staged message to the INBOX of every local recipient."""

    op: ClassVar[str] = "deliver"
    staging_key: str
    sender: str
    recipients: list[str]
    dedup_key: str = ""


# -- mailbox function (``user`` is the principal the gateway authenticated) ------------


@dataclass(frozen=True)
class ListMailboxes(Request):
    op: ClassVar[str] = "list"
    user: str


@dataclass(frozen=True)
class MailboxRequest(Request):
    user: str
    mailbox: str


@dataclass(frozen=True)
class CreateMailbox(MailboxRequest):
    op: ClassVar[str] = "create"
    special_use: str = ""


@dataclass(frozen=True)
class DeleteMailbox(MailboxRequest):
    op: ClassVar[str] = "delete"


@dataclass(frozen=True)
class RenameMailbox(MailboxRequest):
    op: ClassVar[str] = "rename"
    new_name: str


@dataclass(frozen=True)
class Subscribe(MailboxRequest):
    op: ClassVar[str] = "subscribe"
    subscribed: bool = True


@dataclass(frozen=True)
class Status(MailboxRequest):
    op: ClassVar[str] = "status"


@dataclass(frozen=True)
class ListMessages(MailboxRequest):
    """UIDs, flags, sizes and MODSEQs of messages ``first..last`` (no bodies, no MIME)."""

    op: ClassVar[str] = "messages"
    first: int = 1
    last: int = 0


@dataclass(frozen=True)
class FetchMessages(MailboxRequest):
    """Full index records (with envelope, body structure and section offsets)."""

    op: ClassVar[str] = "fetch"
    uids: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class StoreFlags(MailboxRequest):
    op: ClassVar[str] = "store"
    uids: list[int] = field(default_factory=list)
    mode: str = "+"
    flags: list[str] = field(default_factory=list)
    unchanged_since: int = -1


@dataclass(frozen=True)
class Expunge(MailboxRequest):
    op: ClassVar[str] = "expunge"
    uids: list[int] | None = None


@dataclass(frozen=True)
class RemoveMessages(MailboxRequest):
    """Remove these UIDs whatever their flags (POP3 UPDATE state, RFC 1939 §6)."""

    op: ClassVar[str] = "remove"
    uids: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Append(MailboxRequest):
    op: ClassVar[str] = "append"
    staging_key: str
    flags: list[str] = field(default_factory=list)
    internaldate: int = 0


@dataclass(frozen=True)
class CopyMessages(MailboxRequest):
    op: ClassVar[str] = "copy"
    uids: list[int] = field(default_factory=list)
    target: str = ""
    move: bool = False


@dataclass(frozen=True)
class Changes(MailboxRequest):
    op: ClassVar[str] = "changes"
    since: int = 0


AUTH_REQUESTS: tuple[type[Request], ...] = (Authenticate,)
INGEST_REQUESTS: tuple[type[Request], ...] = (Resolve, Deliver)
MAILBOX_REQUESTS: tuple[type[Request], ...] = (
    ListMailboxes,
    CreateMailbox,
    DeleteMailbox,
    RenameMailbox,
    Subscribe,
    Status,
    ListMessages,
    FetchMessages,
    StoreFlags,
    Expunge,
    RemoveMessages,
    Append,
    CopyMessages,
    Changes,
)


def _fits(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_fits(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is list:
        (inner,) = typing.get_args(annotation)
        return isinstance(value, list) and all(_fits(v, inner) for v in value)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def parse_request(event: Any, requests: tuple[type[Request], ...]) -> Request:
    """The request an event carries, its fields checked against their types."""
    if not isinstance(event, dict):
        raise ContractError("event is not an object")
    by_op = {r.op: r for r in requests}
    cls = by_op.get(event.get("op"))  # type: ignore[arg-type]
    if cls is None:
        raise ContractError(f"unknown op {event.get('op')!r}")
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in event:
            if not _fits(event[f.name], hints[f.name]):
                raise ContractError(f"{cls.op}: field {f.name} has the wrong type")
            kwargs[f.name] = event[f.name]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ContractError(f"{cls.op}: field {f.name} is missing")
    return cls(**kwargs)
