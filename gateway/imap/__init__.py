"""IMAP4rev1 (RFC 3501) with IDLE, UIDPLUS, MOVE, LITERAL+, NAMESPACE, ID, ENABLE,
UNSELECT, SPECIAL-USE, CHILDREN, CONDSTORE, ESEARCH, SASL-IR, LIST-EXTENDED and
LIST-STATUS.

Mailboxes and messages live in the index behind the MailboxFunction; message bytes come
from S3 through :mod:`gateway.blobs`, and APPEND streams to S3 ``staging/`` through
:mod:`gateway.staging`.

- ``grammar``: the command parser (no I/O; literals interrupt it);
- ``utf7``, ``names``: mailbox names on the wire, LIST matching;
- ``responses``: the response type, the error taxonomy, IMAP string syntax;
- ``states``, ``session``: RFC 3501 §3 states and the connection loop (``serve``);
- ``commands``: the dispatch table and the handlers, grouped by state;
- ``view``: the selected mailbox as the session sees it (sequence numbers, updates);
- ``fetch``, ``metadata``: FETCH rendering and the per-gateway metadata cache;
- ``search``: SEARCH keys compiled into :mod:`mailcore.search` programs;
- ``watcher``: the one poller per gateway behind NOOP and IDLE;
- ``settings``: limits and policy.
"""

from gateway.imap.session import serve

__all__ = ["serve"]
