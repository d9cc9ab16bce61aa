"""The whole storage of the mail system, wired from settings: what a function works on."""

from __future__ import annotations

from dataclasses import dataclass

from mailcore.accounts import Accounts
from mailcore.addresses import parse_address
from mailcore.aws import Clients
from mailcore.blobstore import BlobStore
from mailcore.events import EventPublisher
from mailcore.mailboxes import MailboxIndex
from mailcore.messages import MessageIndex
from mailcore.settings import Settings
from mailcore.throttle import Throttle


@dataclass
class Store:
    settings: Settings
    accounts: Accounts
    mailboxes: MailboxIndex
    messages: MessageIndex
    blobs: BlobStore
    events: EventPublisher
    #: Failed-login counters (the AuthFunction's; None where ``THROTTLE_TABLE`` is unset).
    throttle: Throttle | None = None

    @classmethod
    def build(cls, settings: Settings, clients: Clients | None = None) -> Store:
        clients = clients or Clients()
        dynamodb = clients.dynamodb
        mailboxes = MailboxIndex(dynamodb, settings.mailboxes_table)
        blobs = BlobStore(clients.s3, settings.mail_bucket, dynamodb, settings.mailboxes_table)
        return cls(
            settings=settings,
            accounts=Accounts(dynamodb, settings.accounts_table),
            mailboxes=mailboxes,
            messages=MessageIndex(dynamodb, settings.messages_table, mailboxes, blobs),
            blobs=blobs,
            events=EventPublisher(clients.events, settings.event_bus_name),
            throttle=Throttle(dynamodb, settings.throttle_table, settings.throttle) if settings.throttle_table else None,
        )

    @classmethod
    def from_env(cls) -> Store:
        return cls.build(Settings.from_env())

    def add_user(self, address: str, password: str) -> str:
        """A new user with INBOX and the special-use mailboxes."""
        user = str(self.accounts.add_user(address, password))
        self.mailboxes.create_defaults(user)
        return user

    def remove_user(self, address: str) -> None:
        """Remove the account, then its mailboxes and their messages."""
        user = str(parse_address(address))
        self.accounts.remove_user(user)
        for mailbox in self.mailboxes.list_all(user):
            self.messages.purge(self.mailboxes.remove(user, mailbox.name, including_inbox=True))
