"""AuthFunction: checks credentials for the gateway (SMTP AUTH, IMAP LOGIN, POP3 PASS)."""

from mailcore.auth_service import OPERATIONS
from mailcore.lambda_app import make_handler

lambda_handler = make_handler("auth", OPERATIONS)
