"""IngestFunction: recipient checks at RCPT time and delivery to local mailboxes."""

from mailcore.delivery import OPERATIONS
from mailcore.lambda_app import make_handler

lambda_handler = make_handler("ingest", OPERATIONS)
