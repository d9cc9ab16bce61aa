"""FETCH responses (RFC 3501 §6.4.5, §7.4.2; RFC 7162 §3.1.4 MODSEQ).

Everything but message bytes comes from the session's view (flags, UID, size, internal
date, MODSEQ) or the gateway's metadata cache (ENVELOPE, BODY, BODYSTRUCTURE, section
offsets); bytes come from the gateway's blob cache (:mod:`gateway.blobs`), read only
when a body section is asked for. Output is gathered into chunks of about 64 KiB; a
message too large for the blob cache is streamed as it is read.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from dataclasses import dataclass

from mailcore.mime import header_fields, section_bytes

from gateway.blobs import BlobMissing, BlobReader
from gateway.imap.grammar import FetchAtt, Section
from gateway.imap.metadata import Metadata
from gateway.imap.view import Message

_CHUNK = 64 * 1024
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
#: Items that need the message's MIME metadata.
_META_ATTS = {"ENVELOPE", "BODY", "BODYSTRUCTURE", "RFC822.HEADER", "RFC822.TEXT"}
#: Items that need the message's bytes.
_BYTES_ATTS = {"RFC822", "RFC822.HEADER", "RFC822.TEXT", "BODY[]"}
#: RFC 3501 §6.4.5: these set \Seen (BODY.PEEK and RFC822.HEADER do not).
_SEEN_ATTS = {"RFC822", "RFC822.TEXT"}


def internaldate(epoch: int) -> bytes:
    """RFC 3501 §9 date-time, in UTC."""
    t = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return b'"%2d-%s-%04d %02d:%02d:%02d +0000"' % (t.day, _MONTHS[t.month - 1].encode(), t.year, t.hour, t.minute, t.second)


@dataclass
class Plan:
    """What a FETCH needs, worked out once for all its messages."""

    atts: tuple[FetchAtt, ...]
    needs_meta: bool
    needs_bytes: bool
    sets_seen: bool

    @classmethod
    def of(cls, atts: tuple[FetchAtt, ...], uid: bool, modseq: bool) -> Plan:
        names = [a.name for a in atts]
        if uid and "UID" not in names:
            atts = (FetchAtt("UID"), *atts)  # RFC 3501 §6.4.8: UID FETCH always answers UID
        if modseq and "MODSEQ" not in names:
            atts = (*atts, FetchAtt("MODSEQ"))  # RFC 7162 §3.1.4.1 CHANGEDSINCE implies MODSEQ
        needs_meta = any(a.name in _META_ATTS or (a.name == "BODY[]" and _section_needs_meta(a.section)) for a in atts)
        needs_bytes = any(a.name in _BYTES_ATTS for a in atts)
        sets_seen = any(a.name in _SEEN_ATTS or (a.name == "BODY[]" and not a.peek) for a in atts)
        return cls(atts, needs_meta, needs_bytes, sets_seen)

    @property
    def flags_requested(self) -> bool:
        return any(a.name == "FLAGS" for a in self.atts)


def _section_needs_meta(section: Section | None) -> bool:
    return section is not None and (bool(section.part) or bool(section.text))


class Renderer:
    def __init__(self, plan: Plan, blobs: BlobReader, metadata: dict[str, Metadata], condstore: bool) -> None:
        self.plan = plan
        self.blobs = blobs
        self.metadata = metadata
        self.condstore = condstore
        #: Messages that could not be answered (expunged meanwhile): RFC 2180 §4.1.2.
        self.missing = 0

    async def responses(self, messages: list[tuple[int, Message]], add_flags: set[int]) -> AsyncIterator[bytes]:
        """``* n FETCH (...)`` for each message; ``add_flags`` are UIDs whose \\Seen was
        just set by this FETCH (their FLAGS go along, RFC 3501 §6.4.5)."""
        out = bytearray()
        for seq, m in messages:
            meta = self.metadata.get(m.sha256) if self.plan.needs_meta else None
            if self.plan.needs_meta and meta is None:
                self.missing += 1
                continue
            raw = None
            if self.plan.needs_bytes:
                if not self.blobs.cacheable(m.size) and self._streams_whole():
                    if out:
                        yield bytes(out)
                        out.clear()
                    async for chunk in self._stream(seq, m, add_flags):
                        yield chunk
                    continue
                try:
                    raw = await self._bytes(m)
                except BlobMissing:
                    self.missing += 1
                    continue
            out += self._message(seq, m, meta, raw, m.uid in add_flags)
            if len(out) >= _CHUNK:
                yield bytes(out)
                out.clear()
        if out:
            yield bytes(out)

    async def _bytes(self, m: Message) -> bytes:
        if self.blobs.cacheable(m.size):
            return await self.blobs.read(m.sha256)
        chunks = await self.blobs.open(m.sha256, m.size)
        return b"".join([c async for c in chunks])

    def _streams_whole(self) -> bool:
        """Only the whole message is asked for (streamable without holding it)."""
        bodies = [a for a in self.plan.atts if a.name in _BYTES_ATTS]
        return len(bodies) == 1 and bodies[0].partial is None and (
            bodies[0].name == "RFC822" or (bodies[0].name == "BODY[]" and not _section_needs_meta(bodies[0].section))
        )

    async def _stream(self, seq: int, m: Message, add_flags: set[int]) -> AsyncIterator[bytes]:
        try:
            chunks = await self.blobs.open(m.sha256, m.size)
        except BlobMissing:
            self.missing += 1
            return
        items = [self._item(a, m, None, None) for a in self.plan.atts if a.name not in _BYTES_ATTS]
        if m.uid in add_flags and not self.plan.flags_requested:
            items.append(b"FLAGS " + m.flag_list())
        body = next(a for a in self.plan.atts if a.name in _BYTES_ATTS)
        name = b"RFC822" if body.name == "RFC822" else b"BODY[]"
        head = b"* %d FETCH (" % seq + b"".join(i + b" " for i in items) + name + b" {%d}\r\n" % m.size
        yield head
        async for chunk in chunks:
            yield chunk
        yield b")\r\n"

    def _message(self, seq: int, m: Message, meta: Metadata | None, raw: bytes | None, add_flags: bool) -> bytes:
        items = [self._item(a, m, meta, raw) for a in self.plan.atts]
        if add_flags and not self.plan.flags_requested:
            items.append(b"FLAGS " + m.flag_list())
        return b"* %d FETCH (%s)\r\n" % (seq, b" ".join(items))

    def _item(self, att: FetchAtt, m: Message, meta: Metadata | None, raw: bytes | None) -> bytes:
        name = att.name
        if name == "FLAGS":
            return b"FLAGS " + m.flag_list()
        if name == "UID":
            return b"UID %d" % m.uid
        if name == "RFC822.SIZE":
            return b"RFC822.SIZE %d" % m.size
        if name == "INTERNALDATE":
            return b"INTERNALDATE " + internaldate(m.internaldate)
        if name == "MODSEQ":
            return b"MODSEQ (%d)" % m.modseq
        if name in ("ENVELOPE", "BODY", "BODYSTRUCTURE"):
            assert meta is not None
            return name.encode() + b" " + {"ENVELOPE": meta.envelope, "BODY": meta.body}.get(name, meta.bodystructure)
        assert raw is not None
        if name == "RFC822":
            return b"RFC822 " + _literal(raw)
        if name == "BODY[]":
            return self._section(att, raw, meta)
        assert meta is not None
        if name == "RFC822.HEADER":
            return b"RFC822.HEADER " + _literal(section_bytes(raw, meta.sections, "", "HEADER"))
        return b"RFC822.TEXT " + _literal(section_bytes(raw, meta.sections, "", "TEXT"))

    def _section(self, att: FetchAtt, raw: bytes, meta: Metadata | None) -> bytes:
        """RFC 3501 §6.4.5 BODY[section]<partial>."""
        section = att.section or Section()
        label = b"BODY[" + section.spec().encode() + b"]"
        data = self._section_data(section, raw, meta)
        if data is None:
            return label + b" NIL"
        if att.partial is not None:
            origin, octets = att.partial
            label += b"<%d>" % origin
            data = data[origin : origin + octets]
        return label + b" " + _literal(data)

    @staticmethod
    def _section_data(section: Section, raw: bytes, meta: Metadata | None) -> bytes | None:
        if not section.part and not section.text:
            return raw
        assert meta is not None
        path = ".".join(str(p) for p in section.part)
        if path not in meta.sections.sections:
            return None
        text = section.text
        if text.startswith("HEADER.FIELDS"):
            header = section_bytes(raw, meta.sections, path, "HEADER")
            if not header and path:
                return None  # HEADER of a part that is not a message/rfc822
            return header_fields(header, list(section.fields), exclude=text.endswith(".NOT"))
        data = section_bytes(raw, meta.sections, path, text)
        if not data and text in ("HEADER", "TEXT") and path and "text" not in meta.sections.sections[path]:
            return None
        return data


def _literal(data: bytes) -> bytes:
    return b"{%d}\r\n%s" % (len(data), data)
