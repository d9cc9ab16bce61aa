"""The outbound queue: records of :class:`mailcore.contracts.RelayRecord`, one per
message and destination domain, on the OutboundQueue (SQS).

A record carries everything the relay needs, so relaying costs no lookups: the
envelope, the DSN parameters, the retry state, and the message itself when it is small
(``OUTBOUND_INLINE_LIMIT``, base64 in the record: no S3 write at submission, no S3 read
per attempt). A larger message stays in ``blobs/<sha256>``, and the queue holds a
reference on it (:mod:`mailcore.blobstore`) until its last record is done.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mailcore.contracts import RelayRecord

#: SQS DelaySeconds is at most 15 minutes; longer waits take several hops.
MAX_DELAY = 900
#: SendMessageBatch: at most 10 entries and 256 KiB in all (SQS Developer Guide, quotas).
MAX_BATCH_ENTRIES = 10
MAX_BATCH_BYTES = 256 * 1024


def record_id(dedup_key: str, domain: str) -> str:
    """The message for one domain: the same for a retried submission of the same message."""
    return hashlib.sha256(f"outbound\0{dedup_key}\0{domain}".encode()).hexdigest()[:32]


def encode_inline(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def decode_inline(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def body(record: RelayRecord) -> str:
    return json.dumps(record.to_event(), separators=(",", ":"))


@dataclass
class OutboundQueue:
    sqs: Any
    url: str

    def send(self, records: Sequence[RelayRecord], delay: int = 0) -> None:
        """Put ``records`` on the queue, visible after ``delay`` seconds (at most 15 minutes).

        One SendMessage for one record; SendMessageBatch for more (up to 10 a request).
        Raises if any record was not accepted: the caller fails and is retried, and the
        relay's markers keep the records that did get through from being sent twice.
        """
        if not self.url:
            raise RuntimeError("OUTBOUND_QUEUE_URL is not set")
        delay = max(0, min(MAX_DELAY, int(delay)))
        bodies = [body(r) for r in records]
        if len(bodies) == 1:
            self.sqs.send_message(QueueUrl=self.url, MessageBody=bodies[0], DelaySeconds=delay)
            return
        batch: list[str] = []
        size = 0
        for text in bodies:
            if batch and (len(batch) == MAX_BATCH_ENTRIES or size + len(text) > MAX_BATCH_BYTES):
                self._send_batch(batch, delay)
                batch, size = [], 0
            batch.append(text)
            size += len(text)
        if batch:
            self._send_batch(batch, delay)

    def _send_batch(self, bodies: list[str], delay: int) -> None:
        entries = [{"Id": str(i), "MessageBody": text, "DelaySeconds": delay} for i, text in enumerate(bodies)]
        reply = self.sqs.send_message_batch(QueueUrl=self.url, Entries=entries)
        if reply.get("Failed"):
            raise RuntimeError(f"{len(reply['Failed'])} outbound records not queued: {reply['Failed'][0].get('Code')}")
