"""Local delivery: recipient checks at RCPT time and delivery of a staged message.

RFC 5321 §6.1: once we answer 250 to the end of data, the message is ours. So a delivery
either indexes the message for every recipient or raises, and the gateway answers 451
(RFC 5321 §4.2.5) and the client retries; the dedup key makes the retry deliver once.
"""

from __future__ import annotations

import time
from typing import Any

from mailcore.contracts import Deliver, Request, Resolve
from mailcore.errors import NotFound
from mailcore.mailboxes import INBOX
from mailcore.messages import NewMessage
from mailcore.mime import analyze
from mailcore.store import Store


def resolve(store: Store, request: Resolve) -> dict[str, Any]:
    """One BatchGetItem: is the domain ours, and does anybody receive this address?"""
    result = store.accounts.resolve(request.recipient)
    return {"recipient": result.recipient, "local_domain": result.local_domain, "deliverable": bool(result.users)}


def deliver(store: Store, request: Deliver) -> dict[str, Any]:
    """Read the staged bytes once, store them content-addressed, index them per user.

    Cost: 1 GetObject + 1 PutObject, 1 BatchGetItem per recipient, 2 DynamoDB requests
    per receiving user (UID allocation, one transaction) and 1 PutEvents per 10 users.
    """
    raw = store.blobs.read_staging(request.staging_key)
    meta = analyze(raw)
    users: dict[str, str] = {}
    for recipient in request.recipients:
        for user in store.accounts.resolve(recipient).users:
            users.setdefault(user, recipient)
    if not users:
        raise NotFound("no local recipient")
    sha = store.blobs.put(raw)
    now = int(time.time())
    deliveries = []
    for user, recipient in users.items():
        message = NewMessage(sha256=sha, size=len(raw), meta=meta.to_item(), internaldate=now)
        key = f"{request.dedup_key}" if request.dedup_key else None
        uids = store.messages.append(user, INBOX, [message], dedup_key=key)
        deliveries.append(
            {
                "recipient": recipient,
                "user": user,
                "mailbox": INBOX,
                "uid": uids[0] if uids else None,
                "duplicate": not uids,
            }
        )
    store.events.publish(
        "MessageReceived",
        [
            {
                "recipient": d["recipient"],
                "user": d["user"],
                "mailbox": d["mailbox"],
                "uid": d["uid"],
                "size": len(raw),
                "sha256": sha,
                "sender": request.sender,
                "message_id": meta.message_id,
            }
            for d in deliveries
            if not d["duplicate"]
        ],
    )
    return {"sha256": sha, "size": len(raw), "deliveries": deliveries}


OPERATIONS: dict[type[Request], Any] = {Resolve: resolve, Deliver: deliver}
