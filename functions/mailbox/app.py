"""MailboxFunction: the IMAP and POP3 operations on a user's mailboxes."""

from mailcore.lambda_app import make_handler
from mailcore.mailbox_service import OPERATIONS

lambda_handler = make_handler("mailbox", OPERATIONS)
