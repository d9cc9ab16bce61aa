"""Local delivery: recipient checks at RCPT time and delivery of a received message.

RFC 5321 §6.1: once we answer 250 to the end of data, the message is ours. So a delivery
either indexes the message for every recipient or raises, and the gateway answers 451
(RFC 5321 §4.2.5) and the client retries; the dedup key makes the retry deliver once.

Reports to senders (RFC 3464) go out from here too (:func:`deliver_report`): a delivery
whose recipients' NOTIFY asks for SUCCESS reports "delivered" (RFC 3461 §6.2.2.1), and
the relay's bounces and notices take the same way.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from typing import Any

from mailcore.aws import Clients
from mailcore.blobstore import sha256_hex
from mailcore.contracts import Deliver, RelayRecord, Request, Resolve
from mailcore.dsn import RecipientReport, asked, build_report, report_id
from mailcore.errors import InvalidInput, NotFound
from mailcore.mailboxes import INBOX
from mailcore.messages import Delivered, NewMessage
from mailcore.mime import analyze
from mailcore.outbound import OutboundQueue, encode_inline, record_id
from mailcore.store import Store

log = logging.getLogger(__name__)
#: The queue for reports to senders elsewhere, where the caller has none.
_clients = Clients()


def resolve(store: Store, request: Resolve) -> dict[str, Any]:
    """Is the domain ours, and does anybody receive this address? One BatchGetItem, or
    none while the answer is cached (:mod:`mailcore.accounts`)."""
    result = store.accounts.resolve(request.recipient)
    return {"recipient": result.recipient, "local_domain": result.local_domain, "deliverable": bool(result.users)}


def deliver(store: Store, request: Deliver) -> dict[str, Any]:
    """Take the bytes (inline, or staged: read once), store them content-addressed,
    index them per user.

    The bytes are the message as it is to be stored: the SMTP gateway, being the
    delivery server, has already put ``Return-Path`` and its ``Received`` line on top
    (RFC 5321 §4.4).

    Cost: 1 PutObject (the blob), 2 DynamoDB requests per receiving user (UID
    allocation, one transaction) and 1 PutEvents per 10 users; for a single recipient,
    3 requests and the event. Staged bytes add 1 GetObject; a recipient whose resolution
    is not cached adds 1 BatchGetItem. A retry in which every recipient is a duplicate
    costs 1 UpdateItem more, plus 1 DeleteObject and 1 UpdateItem when its blob is
    unreferenced (:meth:`BlobStore.delete_unreferenced`), and 2 GetItems per duplicate
    recipient to publish its event again. A release of the same bytes
    racing with the delivery costs it 1 GetItem, 1 PutObject and a transaction more.
    Recipients whose NOTIFY asks for SUCCESS add one report: a delivery into the sender's
    INBOX, or 1 SendMessage to the OutboundQueue.
    """
    raw = message_bytes(store, request)
    meta = analyze(raw)
    users: dict[str, str] = {}
    reached: dict[str, int] = {}  # the recipients that lead to mailboxes: how many
    for recipient in request.recipients:
        found = store.accounts.resolve(recipient).users
        if found:
            reached[recipient] = len(found)
        for user in found:
            users.setdefault(user, recipient)
    if not users:
        raise NotFound("no local recipient")
    blob = store.blobs.write(raw)
    sha = blob.sha256
    now = int(time.time())
    item = meta.to_item()
    deliveries = []
    events = []
    for user, recipient in users.items():
        message = NewMessage(sha256=sha, size=len(raw), meta=item, internaldate=now)
        key = f"{request.dedup_key}" if request.dedup_key else None
        uids = store.messages.append(user, INBOX, [message], dedup_key=key, written=[blob])
        delivery = {"recipient": recipient, "user": user, "mailbox": INBOX, "uid": uids[0] if uids else None}
        deliveries.append({**delivery, "duplicate": not uids})
        stored: Delivered | None = Delivered(uids[0], sha, len(raw)) if uids else None
        if not uids and key is not None:
            # A retry of a delivery made (RFC 5321 §4.1.1.4): its event is published
            # again, as the first attempt may have failed right after indexing (its
            # PutEvents, hence our 451). At least once: a consumer keys on user, mailbox, uid.
            stored = store.messages.delivered(user, INBOX, key)
        if stored is not None:
            events.append(
                {
                    **delivery,
                    "uid": stored.uid,
                    "size": stored.size or len(raw),
                    "sha256": stored.sha256 or sha,
                    "sender": request.sender,
                    "message_id": meta.message_id,
                }
            )
    if all(d["duplicate"] for d in deliveries):
        # A client's retry of a transaction we had already delivered (RFC 5321 §4.1.1.4:
        # our 250 was lost). Its bytes differ from the first attempt's only in the trace
        # fields the gateway adds, so this blob is the retry's own: drop it unless the
        # first attempt stored the very same bytes (then it has references and stays).
        store.blobs.delete_unreferenced(sha)
    store.events.publish("MessageReceived", events)
    report_delivered(store, request, raw, reached, now)
    return {"sha256": sha, "size": len(raw), "deliveries": deliveries}


def report_delivered(store: Store, request: Deliver, raw: bytes, reached: dict[str, int], now: int) -> None:
    """RFC 3461 §6.2.2.1: as the final delivery, a "delivered" report to the sender for
    the recipients whose NOTIFY asks for SUCCESS ("expanded" for an alias that reached
    several mailboxes, RFC 3464 §2.3.3). A retried delivery reports again under the same
    name, so the sender gets it once."""
    wanted = [r for r in reached if asked(request.recipients, request.notify, r, "delivered")]
    if not request.sender or not wanted:
        return
    index = {r: i for i, r in enumerate(request.recipients)}
    reports = [
        RecipientReport(
            recipient=r,
            action="expanded" if reached[r] > 1 else "delivered",
            status="2.0.0",
            original_recipient=request.orcpt[index[r]] if index[r] < len(request.orcpt) else "",
            last_attempt=now,
        )
        for r in wanted
    ]
    report = build_report(
        reporting_mta=store.settings.mail_hostname,
        sender=request.sender,
        reports=reports,
        original=raw,
        arrival=now,
        envid=request.envid,
        ret=request.ret,
        now=now,
    )
    name = request.dedup_key or report_id(sha256_hex(raw), *wanted)
    deliver_report(store, request.sender, report, f"dsn:delivered:{name}")


def deliver_report(store: Store, sender: str, report: bytes, dedup: str, queue: OutboundQueue | None = None) -> None:
    """A report (RFC 3464) to ``sender``, with the null reverse-path, which no report
    answers (RFC 3464 §2): into the sender's INBOX when the address is ours, else on the
    OutboundQueue to the sender's domain (inline: :data:`mailcore.dsn.MAX_RETURNED` keeps
    it small). ``dedup`` names it: delivered once, however often this is called."""
    # RFC 5321 §4.4: final delivery records the (null) reverse-path.
    body = b"Return-Path: <>\r\n" + report
    try:
        inline = base64.b64encode(body).decode("ascii")
        deliver(store, Deliver(staging_key="", message=inline, sender="", recipients=[sender], dedup_key=dedup))
        return
    except NotFound:
        pass
    if store.accounts.resolve(sender).local_domain:
        log.warning("a report for a user of ours who is gone was dropped")
        return
    domain = sender.rpartition("@")[2]
    record = RelayRecord(
        id=record_id(dedup, domain),
        domain=domain,
        sender="",
        recipients=[sender],
        sha256=sha256_hex(report),
        size=len(report),
        message=encode_inline(report),
        first_attempt=int(time.time()),
    )
    (queue or OutboundQueue(_clients.sqs, store.settings.outbound_queue_url)).send([record])


def message_bytes(store: Store, request: Deliver) -> bytes:
    """The message: inline (base64) or staged in S3, never both (DESIGN.md contract 1)."""
    if request.message:
        if request.staging_key:
            raise InvalidInput("deliver: both staging_key and message")
        try:
            return base64.b64decode(request.message, validate=True)
        except binascii.Error:
            raise InvalidInput("deliver: message is not base64") from None
    if not request.staging_key:
        raise InvalidInput("deliver: neither staging_key nor message")
    return store.blobs.read_staging(request.staging_key)


OPERATIONS: dict[type[Request], Any] = {Resolve: resolve, Deliver: deliver}
