"""The session's view of its selected mailbox (RFC 3501 §2.3.1.2 message sequence
numbers): which messages it has, in which order, with which flags, and what it still has
to tell the client.

Other sessions' changes arrive as the ``changes`` operation's answer. New messages and
flag changes enter the view at once and are reported as ``EXISTS``/``FETCH``; an expunge
only marks the message: it keeps its sequence number until an ``EXPUNGE`` response may be
sent (never while FETCH, STORE or SEARCH answer, RFC 3501 §7.4.1), so the client's
numbers and ours never disagree.

Sequence numbers are positions in :attr:`MailboxView.uids` (ascending UIDs); lookups are
bisections, so 10,000-item sequence sets over 100,000 messages stay cheap.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gateway.imap.grammar import SequenceSet
from gateway.imap.responses import Bad

#: RFC 3501 §2.3.2 system flags, announced in FLAGS and PERMANENTFLAGS.
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
#: How far behind the last-but-one sync point a change query starts: an operation takes
#: its MODSEQ before it writes, so writes can land late; re-reading a few MODSEQs catches
#: them and costs only items that changed anyway (duplicates are dropped here).
MODSEQ_LAG = 8


class MailboxGone(Exception):
    """The selected mailbox was deleted, or re-created with a new UIDVALIDITY."""


@dataclass(slots=True)
class Message:
    uid: int
    flags: tuple[str, ...]
    modseq: int
    size: int
    internaldate: int
    sha256: str
    recent: bool = False
    #: Expunged on the server; the client has not been told yet.
    expunged: bool = False

    @classmethod
    def from_record(cls, record: dict[str, Any], recent: bool = False) -> Message:
        return cls(
            int(record["uid"]),
            tuple(record.get("flags") or ()),
            int(record.get("modseq", 0)),
            int(record.get("size", 0)),
            int(record.get("internaldate", 0)),
            str(record.get("sha256", "")),
            recent,
        )

    def flag_list(self) -> bytes:
        flags = (*self.flags, "\\Recent") if self.recent else self.flags
        return ("(" + " ".join(flags) + ")").encode()


class MailboxView:
    def __init__(
        self,
        name: str,
        mailbox: dict[str, Any],
        records: list[dict[str, Any]],
        recent_uid: int,
        readonly: bool,
    ) -> None:
        self.name = name
        self.readonly = readonly
        self.mailbox_id = str(mailbox["mailbox_id"])
        self.uidvalidity = int(mailbox["uidvalidity"])
        self.uidnext = int(mailbox.get("uidnext", 1))
        self.highestmodseq = int(mailbox.get("highestmodseq", 1))
        #: The HIGHESTMODSEQ seen by the last two syncs (see MODSEQ_LAG).
        self.sync_points = [self.highestmodseq, self.highestmodseq]
        self.messages: dict[int, Message] = {}
        self.uids: list[int] = []
        self.add_records(records, recent_uid)
        self.keywords = self._keywords_in_use()
        self._exists_changed = False
        self._flags_changed = False
        self._dirty: set[int] = set()
        self._expunged: set[int] = set()

    def add_records(self, records: Iterable[dict[str, Any]], recent_uid: int) -> None:
        """Summaries in ascending UID order (a SELECT page)."""
        for record in records:
            m = Message.from_record(record, recent=not self.readonly and int(record["uid"]) >= recent_uid)
            if self.uids and m.uid <= self.uids[-1]:
                continue
            self.messages[m.uid] = m
            self.uids.append(m.uid)

    def _keywords_in_use(self) -> set[str]:
        return {f for m in self.messages.values() for f in m.flags if not f.startswith("\\")}

    # -- numbers --------------------------------------------------------------------------

    @property
    def exists(self) -> int:
        return len(self.uids)

    @property
    def recent(self) -> int:
        return sum(1 for m in self.messages.values() if m.recent)

    def seq_of(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else None

    def by_sequence(self, sequence: SequenceSet) -> list[tuple[int, Message]]:
        """RFC 3501 §9 seq-number: numbers beyond EXISTS are an error (BAD); ``*`` in an
        empty mailbox matches nothing."""
        n = len(self.uids)
        if n == 0:
            if sequence.uses_star and all(a is None or b is None for a, b in sequence.ranges):
                return []
            raise Bad("Invalid message sequence number: the mailbox is empty")
        wanted: set[int] = set()
        for lo, hi in sequence.resolve(n):
            if hi > n:
                raise Bad(f"Invalid message sequence number {hi} (EXISTS is {n})")
            wanted.update(range(lo, hi + 1))
        return [(seq, self.messages[self.uids[seq - 1]]) for seq in sorted(wanted)]

    def by_uid(self, sequence: SequenceSet) -> list[tuple[int, Message]]:
        """RFC 3501 §6.4.8: UIDs that do not exist are ignored; ``*`` is the last UID."""
        largest = self.uids[-1] if self.uids else 0
        indexes: set[int] = set()
        for lo, hi in sequence.resolve(largest):
            start = bisect.bisect_left(self.uids, lo)
            end = bisect.bisect_right(self.uids, hi)
            indexes.update(range(start, end))
        return [(i + 1, self.messages[self.uids[i]]) for i in sorted(indexes)]

    def resolve(self, sequence: SequenceSet, uid: bool) -> list[tuple[int, Message]]:
        return self.by_uid(sequence) if uid else self.by_sequence(sequence)

    def first_unseen(self) -> int | None:
        for seq, uid in enumerate(self.uids, 1):
            if "\\Seen" not in self.messages[uid].flags:
                return seq
        return None

    # -- changes ----------------------------------------------------------------------------

    @property
    def since(self) -> int:
        """Where the next ``changes`` query starts."""
        return max(0, self.sync_points[0] - MODSEQ_LAG)

    def apply_changes(self, result: dict[str, Any], condstore: bool) -> None:
        """Fold a ``changes`` answer into the view; the updates wait in :meth:`updates`."""
        mailbox = result.get("mailbox") or {}
        if mailbox.get("mailbox_id") != self.mailbox_id or int(mailbox.get("uidvalidity", 0)) != self.uidvalidity:
            raise MailboxGone(self.name)
        for record in sorted(result.get("changed") or [], key=lambda r: int(r["uid"])):
            self._apply_record(record, condstore)
        for uid in result.get("expunged") or []:
            self.mark_expunged(int(uid))
        highest = int(mailbox.get("highestmodseq", self.highestmodseq))
        self.sync_points = [self.sync_points[1], highest]
        self.highestmodseq = max(self.highestmodseq, highest)
        self.uidnext = max(self.uidnext, int(mailbox.get("uidnext", self.uidnext)))

    def _apply_record(self, record: dict[str, Any], condstore: bool) -> None:
        uid = int(record["uid"])
        current = self.messages.get(uid)
        if current is None:
            # Deviation from RFC 3501 §2.3.1.1 in one race: a UID lower than one already
            # shown (a delivery whose write landed late) waits for the next SELECT, as
            # sequence numbers must ascend with UIDs.
            if not self.uids or uid > self.uids[-1]:
                # Deviation from RFC 3501 §2.3.2: new mail is \Recent to every session that
                # sees it arrive, not to exactly one (SELECT claims exactly-once).
                self.messages[uid] = Message.from_record(record, recent=not self.readonly)
                self.uids.append(uid)
                self._exists_changed = True
                self._note_keywords(self.messages[uid].flags)
            return
        modseq = int(record.get("modseq", 0))
        if current.expunged or modseq <= current.modseq:
            return
        flags = tuple(record.get("flags") or ())
        current.modseq = modseq
        if set(flags) != set(current.flags) or condstore:
            current.flags = flags
            self._dirty.add(uid)
            self._note_keywords(flags)

    def _note_keywords(self, flags: Iterable[str]) -> None:
        new = {f for f in flags if not f.startswith("\\")} - self.keywords
        if new:
            self.keywords |= new
            self._flags_changed = True  # RFC 3501 §7.2.6: a new FLAGS response

    def apply_stored(self, records: list[dict[str, Any]]) -> list[Message]:
        """This session's own STORE results (flags and MODSEQ as the index answered)."""
        changed = []
        for record in records:
            m = self.messages.get(int(record["uid"]))
            if m is None or m.expunged:
                continue
            m.flags = tuple(record.get("flags") or ())
            m.modseq = max(m.modseq, int(record.get("modseq", 0)))
            self._note_keywords(m.flags)
            self._dirty.discard(m.uid)
            changed.append(m)
        return changed

    def mark_expunged(self, uid: int) -> None:
        m = self.messages.get(uid)
        if m is not None and not m.expunged:
            m.expunged = True
            self._expunged.add(uid)
            self._dirty.discard(uid)

    @property
    def has_pending_expunges(self) -> bool:
        return bool(self._expunged)

    def updates(self, allow_expunge: bool, condstore: bool, uid: bool = False) -> list[bytes]:
        """Untagged responses owed to the client, in an order that keeps numbers valid."""
        lines: list[bytes] = []
        if allow_expunge and self._expunged:
            lines += self._take_expunges()
        if self._flags_changed:
            lines.append(b"* FLAGS " + self.flags_response() + b"\r\n")
            lines.append(b"* OK [PERMANENTFLAGS " + self.permanent_flags() + b"] Flags permitted\r\n")
            self._flags_changed = False
        if self._exists_changed:
            lines.append(b"* %d EXISTS\r\n" % len(self.uids))
            lines.append(b"* %d RECENT\r\n" % self.recent)
            self._exists_changed = False
        if self._dirty:
            for uid_ in sorted(self._dirty):
                seq = self.seq_of(uid_)
                if seq is None:
                    continue
                m = self.messages[uid_]
                lines.append(self.fetch_flags_line(seq, m, condstore, uid))
            self._dirty.clear()
        return lines

    def fetch_flags_line(self, seq: int, m: Message, condstore: bool, uid: bool) -> bytes:
        items = []
        if uid:
            items.append(b"UID %d" % m.uid)
        items.append(b"FLAGS " + m.flag_list())
        if condstore:
            items.append(b"MODSEQ (%d)" % m.modseq)
        return b"* %d FETCH (%s)\r\n" % (seq, b" ".join(items))

    def _take_expunges(self) -> list[bytes]:
        """RFC 3501 §7.4.1: one EXPUNGE per message, highest number first so that each
        number is right when the client reads it."""
        positions = sorted((self.seq_of(uid) or 0 for uid in self._expunged), reverse=True)
        lines = [b"* %d EXPUNGE\r\n" % seq for seq in positions if seq]
        gone = self._expunged
        self.uids = [u for u in self.uids if u not in gone]
        for uid in gone:
            self.messages.pop(uid, None)
        self._expunged = set()
        return lines

    def flags_response(self) -> bytes:
        return ("(" + " ".join((*SYSTEM_FLAGS, *sorted(self.keywords))) + ")").encode()

    def permanent_flags(self) -> bytes:
        if self.readonly:
            return b"()"
        return ("(" + " ".join((*SYSTEM_FLAGS, *sorted(self.keywords), "\\*")) + ")").encode()
