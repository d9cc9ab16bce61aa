"""A session's view of its maildrop: what RFC 1939 §5 asks the server to remember.

Messages are numbered 1..n in UID order when the session enters the TRANSACTION state,
and the numbers hold for the whole session (RFC 1939 §5: "message numbers ... do not
change during the session"). DELE only marks a message (RFC 1939 §5 DELE), RSET unmarks
(§5 RSET), and the marks are committed only in the UPDATE state (§6). No I/O here: the
session fetched the listing with one MailboxFunction call, and STAT, LIST and UIDL are
answered from it without another request.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from gateway.pop3.replies import NoSuchMessage

SEEN = "\\Seen"


@dataclass
class Message:
    number: int
    uid: int
    size: int
    sha256: str
    seen: bool = False
    deleted: bool = False
    retrieved: bool = False


@dataclass
class Maildrop:
    user: str
    uidvalidity: int
    messages: list[Message] = field(default_factory=list)
    _count: int = 0
    _octets: int = 0

    def __post_init__(self) -> None:
        self.reset()

    @classmethod
    def from_listing(cls, user: str, result: dict[str, Any]) -> Maildrop:
        """From the MailboxFunction's listing (``select``: the mailbox and its summaries)."""
        records = sorted(result["messages"], key=lambda r: int(r["uid"]))
        messages = [
            Message(n, int(r["uid"]), int(r.get("size", 0)), str(r.get("sha256", "")), SEEN in r.get("flags", []))
            for n, r in enumerate(records, start=1)
        ]
        return cls(user, int(result["mailbox"]["uidvalidity"]), messages)

    # -- RFC 1939 §5 --------------------------------------------------------------

    @property
    def count(self) -> int:
        """Messages not marked as deleted."""
        return self._count

    @property
    def octets(self) -> int:
        """Their total size in octets."""
        return self._octets

    def get(self, number: int) -> Message:
        """A message by number; marked-as-deleted messages may not be referred to (RFC 1939 §5)."""
        if not 1 <= number <= len(self.messages):
            raise NoSuchMessage(f"No such message {number}")
        message = self.messages[number - 1]
        if message.deleted:
            raise NoSuchMessage(f"Message {number} already deleted")
        return message

    def live(self) -> Iterator[Message]:
        return (m for m in self.messages if not m.deleted)

    def delete(self, number: int) -> Message:
        message = self.get(number)
        message.deleted = True
        self._count -= 1
        self._octets -= message.size
        return message

    def reset(self) -> None:
        """RSET: unmark every message."""
        for message in self.messages:
            message.deleted = False
        self._count = len(self.messages)
        self._octets = sum(m.size for m in self.messages)

    def unique_id(self, message: Message) -> str:
        """RFC 1939 §7 UIDL: 1-70 characters in 0x21-0x7E, the same for the same message in
        every session. ``<uidvalidity>.<uid>`` is: UIDs never change and are never reused
        within a UIDVALIDITY (RFC 3501 §2.3.1.1), whatever IMAP clients do meanwhile."""
        return f"{self.uidvalidity}.{message.uid}"

    # -- RFC 1939 §6 --------------------------------------------------------------

    def marked(self) -> list[int]:
        """UIDs of the messages to remove in the UPDATE state."""
        return [m.uid for m in self.messages if m.deleted]

    def newly_seen(self) -> list[int]:
        """UIDs of messages retrieved in this session and kept, not yet \\Seen."""
        return [m.uid for m in self.messages if m.retrieved and not m.deleted and not m.seen]
