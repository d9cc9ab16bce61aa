"""MIME metadata per blob, rendered once and cached by the gateway.

A message's ENVELOPE, BODY, BODYSTRUCTURE and section offsets are computed at ingest
(:mod:`mailcore.mime`) and come with the ``fetch`` operation. They are a function of the
message bytes, which never change, so the gateway caches them by the blob's SHA-256,
already in IMAP syntax: a second FETCH ENVELOPE of the same message costs no AWS request.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from mailcore.mime import MessageMetadata, render

DEFAULT_CAPACITY = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Metadata:
    envelope: bytes
    body: bytes
    bodystructure: bytes
    #: For :func:`mailcore.mime.section_bytes` (envelope and structures left out).
    sections: MessageMetadata

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Metadata:
        md = MessageMetadata.from_item(meta)
        sections = MessageMetadata(md.size, [], [], [], md.sections, None, None, None, None)
        return cls(render(md.envelope), render(md.body), render(md.bodystructure), sections)

    @property
    def cost(self) -> int:
        """Approximate bytes held."""
        return len(self.envelope) + len(self.body) + len(self.bodystructure) + 120 * len(self.sections.sections) + 200


class MetadataCache:
    """An LRU bounded in (approximate) bytes, shared by the sessions of one gateway."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self.size = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[str, Metadata] = OrderedDict()

    def get(self, sha256: str) -> Metadata | None:
        entry = self._entries.get(sha256)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(sha256)
        self.hits += 1
        return entry

    def put(self, sha256: str, meta: dict[str, Any]) -> Metadata:
        existing = self._entries.get(sha256)
        if existing is not None:
            return existing
        entry = Metadata.from_meta(meta)
        self._entries[sha256] = entry
        self.size += entry.cost
        while self.size > self.capacity and len(self._entries) > 1:
            _, evicted = self._entries.popitem(last=False)
            self.size -= evicted.cost
        return entry
