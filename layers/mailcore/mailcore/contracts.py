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
    """Check credentials. ``client_address`` is the client's IP address as the gateway
    sees it (the PROXY protocol's source behind the load balancer): failures are
    throttled per address and per account (:mod:`mailcore.throttle`).

    A refusal answers ``{"ok": false, "error": "THROTTLED", "retry_after": <seconds>}``
    without checking the password; a wrong password ``"AUTHENTICATIONFAILED"`` with
    ``"delay"``: the seconds to wait before telling the client.
    """

    op: ClassVar[str] = "authenticate"
    username: str
    password: str = field(repr=False)  # never in a log line or a traceback's repr
    client_address: str = ""


# -- ingest function ----------------------------------------------------------------


@dataclass(frozen=True)
class Resolve(Request):
    """May mail for ``recipient`` be accepted here (RCPT TO)?"""

    op: ClassVar[str] = "resolve"
    recipient: str


@dataclass(frozen=True)
class Deliver(Request):
    """Deliver a message to the INBOX of every local recipient.

    The bytes are the staged object ``staging_key``, or, for a small message (the
    gateway's inline limit, 256 KiB by default), ``message``: the same bytes inline,
    base64, with ``staging_key`` "" (DESIGN.md contract 1: a size threshold decides; it
    saves the staging PutObject and GetObject). Either way they are the message as it is
    to be stored, trace fields included.

    The DSN parameters of the SMTP envelope travel along (RFC 3461 §4): ``ret`` and
    ``envid`` of MAIL, and per recipient (same order as ``recipients``) its NOTIFY list
    (comma-separated, "" when absent) and its ORCPT (``addr-type;address``, "" when absent).
    """

    op: ClassVar[str] = "deliver"
    staging_key: str
    sender: str
    recipients: list[str]
    dedup_key: str = ""
    ret: str = ""
    envid: str = ""
    notify: list[str] = field(default_factory=list)
    orcpt: list[str] = field(default_factory=list)
    message: str = ""


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
    """RFC 3501 §6.3.10; ``recent``: also count the \\Recent messages (one Query more)."""

    op: ClassVar[str] = "status"
    recent: bool = False


@dataclass(frozen=True)
class ListMessages(MailboxRequest):
    """UIDs, flags, sizes and MODSEQs of messages ``first..last`` (no bodies, no MIME), a
    page of at most 20,000 (``more``: ask again from the last UID + 1)."""

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


# -- mailbox function: POP3 maildrop leases (RFC 1939 §4 exclusive-access lock) -------


@dataclass(frozen=True)
class LockMaildrop(Request):
    """Take or renew the lease on ``user``'s maildrop for ``seconds`` as ``owner`` (a
    session id); refused with ``INUSE`` while another owner's lease is unexpired."""

    op: ClassVar[str] = "lock"
    user: str
    owner: str
    seconds: int = 300


@dataclass(frozen=True)
class UnlockMaildrop(Request):
    """Release the lease if ``owner`` holds it."""

    op: ClassVar[str] = "unlock"
    user: str
    owner: str


MAILBOX_REQUESTS = (*MAILBOX_REQUESTS, LockMaildrop, UnlockMaildrop)


# -- mailbox function: IMAP session support (gateway/imap) ------------------------------


@dataclass(frozen=True)
class SelectMailbox(MailboxRequest):
    """RFC 3501 §6.3.1 SELECT / §6.3.2 EXAMINE: the mailbox and a page of its messages'
    summaries (UID, flags, MODSEQ, size, internal date, blob hash; no MIME).

    A first page (``after_uid`` 0) of a read-write SELECT also claims the \\Recent
    messages (RFC 3501 §2.3.2): it answers ``recent_uid``, the first UID that is recent to
    this session, and moves the mailbox's mark to UIDNEXT, so no later session sees them as
    recent. ``more`` says whether another page follows (ask with ``after_uid`` = the last
    UID received and ``readonly`` true). One UpdateItem (or GetItem) and one Query per page.
    """

    op: ClassVar[str] = "select"
    readonly: bool = False
    after_uid: int = 0
    limit: int = 0


@dataclass(frozen=True)
class WatchMailboxes(Request):
    """IDLE and NOOP polling, batched per gateway (DESIGN.md contract 4): entry ``i`` is
    ``(users[i], mailboxes[i], since[i])``. Answers the entries whose mailbox's
    HIGHESTMODSEQ is above ``since`` (or that no longer exist). One BatchGetItem per 100
    distinct mailboxes, however many sessions watch them."""

    op: ClassVar[str] = "watch"
    users: list[str] = field(default_factory=list)
    mailboxes: list[str] = field(default_factory=list)
    since: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class SearchMessages(MailboxRequest):
    """RFC 3501 §6.4.4 SEARCH over the index: ``program`` is the JSON search program of
    :mod:`mailcore.search` (sequence numbers already turned into UIDs by the gateway),
    evaluated on the messages with ``first_uid <= uid <= last_uid`` (0: no upper bound).
    Reads message metadata only when a key needs it, and message bytes only for HEADER,
    BODY and TEXT keys."""

    op: ClassVar[str] = "search"
    program: str = '["all"]'
    first_uid: int = 1
    last_uid: int = 0


MAILBOX_REQUESTS = (*MAILBOX_REQUESTS, SelectMailbox, WatchMailboxes, SearchMessages)


# -- submit function: RFC 6409 message submission (gateway ports 587/465) ---------------


@dataclass(frozen=True)
class Submit(Request):
    """Accept a message an authenticated user submitted (RFC 6409).

    ``user`` is the principal the gateway authenticated (RFC 4954); the function checks
    that it owns ``sender`` (its own address, an alias whose targets include it, or a
    plus-address of either: RFC 6409 §6.1) and refuses with ``NOPERM`` otherwise, which the
    listener answers with 553 5.7.1. ``sender`` "" is the null reverse-path.

    The bytes are the staged object ``staging_key`` (as the client sent them, with the
    listener's ``Received`` line on top and no ``Return-Path``), or, for a small message,
    ``message``: the same bytes inline, base64 (DESIGN.md contract 1: a size threshold
    decides). ``dedup_key`` makes a retried submission deliver and queue once. The DSN
    parameters of the envelope travel along as in :class:`Deliver` (RFC 3461 §4).
    """

    op: ClassVar[str] = "submit"
    user: str
    sender: str
    recipients: list[str]
    staging_key: str = ""
    message: str = ""
    dedup_key: str = ""
    ret: str = ""
    envid: str = ""
    notify: list[str] = field(default_factory=list)
    orcpt: list[str] = field(default_factory=list)


SUBMIT_REQUESTS: tuple[type[Request], ...] = (Submit,)


# -- relay function: the body of one OutboundQueue record ------------------------------


@dataclass(frozen=True)
class RelayRecord(Request):
    """One message for the recipients of one destination domain, awaiting relay.

    ``id`` names the message for this domain (stable across retried submissions);
    ``hop`` counts the times the record was put back on the queue, so ``(id, hop)`` names
    one queue record, which the relay processes once. The bytes are inline (``message``,
    base64) when small, else in ``blobs/<sha256>`` with a reference held for the queue.
    ``first_attempt`` is the arrival time (epoch seconds) from which the delivery
    lifetime runs; ``not_before`` the earliest time of the next attempt (SQS delays a
    record 15 minutes at most, so a longer wait takes several hops).
    """

    op: ClassVar[str] = "relay"
    id: str
    domain: str
    sender: str
    recipients: list[str]
    sha256: str
    size: int
    message: str = ""
    message_id: str = ""
    user: str = ""
    hop: int = 0
    attempts: int = 0
    first_attempt: int = 0
    not_before: int = 0
    ret: str = ""
    envid: str = ""
    notify: list[str] = field(default_factory=list)
    orcpt: list[str] = field(default_factory=list)
    #: The sender was told of the delay already (one "delayed" report per message).
    warned: bool = False


RELAY_REQUESTS: tuple[type[Request], ...] = (RelayRecord,)
