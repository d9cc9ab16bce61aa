"""Reading a mailbox's summaries a page at a time, as IMAP SELECT and the POP3 maildrop do.

Each MailboxFunction ``select`` answer holds one page (20,000 summaries at most), so it
stays far inside a Lambda payload's 6 MB however large the mailbox (DESIGN.md contract 1).
Only the first page may claim the \\Recent messages (RFC 3501 §2.3.2); the rest are read
only, each after the last UID of the page before.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from mailcore.contracts import Request, SelectMailbox

Call = Callable[[Request], Awaitable[dict[str, Any]]]


async def select_pages(
    call: Call, user: str, mailbox: str, readonly: bool, limit: int
) -> AsyncIterator[dict[str, Any]]:
    """Every page's answer, the first as ``readonly`` says; stops after a page that says no
    ``more`` (or is a refusal, which says none)."""
    page = await call(SelectMailbox(user, mailbox, readonly, limit=limit))
    yield page
    while page.get("more") and page.get("messages"):
        after = int(page["messages"][-1]["uid"])
        name = str(page["mailbox"]["name"])
        page = await call(SelectMailbox(user, name, True, after_uid=after, limit=limit))
        yield page
