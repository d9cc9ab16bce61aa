"""Local delivery: recipient checks at RCPT time and delivery of a received message.

RFC 5321 §6.1: once we answer 250 to the end of data, the message is ours. So a delivery
either indexes the message for every recipient or raises, and the gateway answers 451
(RFC 5321 §4.2.5) and the client retries; the dedup key makes the retry deliver once.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

from mailcore.contracts import Deliver, Request, Resolve
from mailcore.errors import InvalidInput, NotFound
from mailcore.mailboxes import INBOX
from mailcore.messages import Delivered, NewMessage
from mailcore.mime import analyze
from mailcore.store import Store


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
    """
    raw = message_bytes(store, request)
    meta = analyze(raw)
    users: dict[str, str] = {}
    for recipient in request.recipients:
        for user in store.accounts.resolve(recipient).users:
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
    return {"sha256": sha, "size": len(raw), "deliveries": deliveries}


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
