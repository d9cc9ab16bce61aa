"""POP3: RFC 1939 with CAPA and response codes (RFC 2449, RFC 3206), STLS (RFC 2595) and
SASL PLAIN (RFC 5034, RFC 4616).

The maildrop is the user's INBOX as IMAP sees it, read through the MailboxFunction;
message bytes come from S3 through :mod:`gateway.blobs`.

- ``grammar``: command lines and arguments, parsed with no I/O;
- ``replies``: the reply type, the error taxonomy and the reply texts;
- ``maildrop``: the session's view of the maildrop (fixed message numbers, deletion marks);
- ``content``: dot-stuffing and TOP over streamed chunks;
- ``settings``: limits and policy;
- ``session``: the state machine, its command table and the connection loop (``serve``).
"""

from gateway.pop3.session import serve

__all__ = ["serve"]
