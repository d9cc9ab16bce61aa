"""Per-connection state (the session) apart from per-message state (the transaction).

RFC 5321 §3.3: a mail transaction starts with MAIL, gathers recipients with RCPT and
ends with the data (DATA, or the BDAT chunks of RFC 3030), RSET, a new EHLO/HELO or
the end of the session. The session outlives transactions: the client's name, whether
it spoke EHLO, TLS, and the error budget.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from gateway.smtp.data import MessageSink
from gateway.smtp.grammar import Mailbox, MailParameters


class State(enum.Enum):
    """Where the session is in the command sequence of RFC 5321 §4.1.4."""

    INITIAL = "initial"  # connected and greeted, no EHLO/HELO yet
    READY = "ready"  # EHLO/HELO done, no transaction
    MAIL = "mail"  # MAIL accepted, no recipient yet
    RCPT = "rcpt"  # at least one recipient accepted: DATA or BDAT may follow
    CHUNKING = "chunking"  # BDAT chunks arriving, the LAST one not yet (RFC 3030 §2)


@dataclass(frozen=True)
class Recipient:
    address: str  # normalized by the resolve operation: what delivery uses
    forward_path: str  # as the client wrote it
    notify: tuple[str, ...] = ()  # RFC 3461 §4.1
    orcpt: str = ""  # RFC 3461 §4.2, "addr-type;address" decoded from xtext


@dataclass
class Transaction:
    """The envelope of one message."""

    number: int
    reverse_path: Mailbox | None
    parameters: MailParameters
    recipients: list[Recipient] = field(default_factory=list)
    sink: MessageSink | None = None  # open while DATA or BDAT bytes arrive

    @property
    def sender(self) -> str:
        return str(self.reverse_path) if self.reverse_path is not None else ""

    def add(self, recipient: Recipient) -> None:
        """A recipient named twice is one recipient (RFC 5321 §3.3 leaves duplicates to us)."""
        if all(r.address != recipient.address for r in self.recipients):
            self.recipients.append(recipient)


@dataclass
class Session:
    session_id: str
    client_ip: str
    state: State = State.INITIAL
    helo: str = ""
    esmtp: bool = False
    transaction: Transaction | None = None
    transactions: int = 0
    errors: int = 0

    @property
    def greeted(self) -> bool:
        return self.state is not State.INITIAL

    def begin(self, reverse_path: Mailbox | None, parameters: MailParameters) -> Transaction:
        self.transactions += 1
        self.transaction = Transaction(self.transactions, reverse_path, parameters)
        self.state = State.MAIL
        return self.transaction

    def transaction_id(self, transaction: Transaction) -> str:
        """The ``id`` of our Received line and of the 250 reply: session and message."""
        return f"{self.session_id}-{transaction.number}"
