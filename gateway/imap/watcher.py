"""One poller per gateway for every mailbox its IMAP sessions have selected.

Work that scales with connections is batched (DESIGN.md contract 4): each
``poll_interval`` the poller makes one ``watch`` call (one BatchGetItem per 100 distinct
mailboxes in the function) naming every watched mailbox with the HIGHESTMODSEQ it last
saw, and wakes the sessions of the mailboxes that changed. Only those then ask the
``changes`` operation what changed. An idle minute therefore costs
``60 / poll_interval`` calls per gateway, whatever the number of idle sessions.

NOOP and CHECK ask for a fresh poll (:meth:`Watcher.fresh`): it is shared with every
other session that asks before it starts, and polls are at least ``poll_min_gap`` apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from mailcore.aws import BACKGROUND
from mailcore.contracts import WatchMailboxes

from gateway.functions import FunctionClient, TemporaryFailure

log = logging.getLogger(__name__)

#: Entries per ``watch`` call (the function accepts 5,000).
BATCH = 5_000
Key = tuple[str, str]  # (user, mailbox name as the index spells it)


@dataclass(eq=False)
class Subscription:
    key: Key
    #: Set when the mailbox changed (or went away) since the session last looked.
    changed: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class WatchStats:
    polls: int = 0
    calls: int = 0
    failures: int = 0


class Watcher:
    def __init__(self, functions: FunctionClient, interval: float, min_gap: float) -> None:
        self.functions = functions
        self.interval = interval
        self.min_gap = min_gap
        self.stats = WatchStats()
        #: The HIGHESTMODSEQ each watched mailbox had at the last poll.
        self.known: dict[Key, int] = {}
        self.gone: set[Key] = set()
        self._subscriptions: dict[Key, set[Subscription]] = {}
        self._wake = asyncio.Event()
        self._next_poll: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_start = 0.0

    @property
    def watched(self) -> int:
        return len(self._subscriptions)

    def subscribe(self, user: str, mailbox: str, highestmodseq: int) -> Subscription:
        key = (user, mailbox)
        sub = Subscription(key)
        self._subscriptions.setdefault(key, set()).add(sub)
        self.known[key] = max(self.known.get(key, 0), highestmodseq)
        self.gone.discard(key)
        self._ensure_running()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subscriptions.get(sub.key)
        if subs is None:
            return
        subs.discard(sub)
        if not subs:
            del self._subscriptions[sub.key]
            self.known.pop(sub.key, None)
            self.gone.discard(sub.key)

    def changed_since(self, sub: Subscription, highestmodseq: int) -> bool:
        """Has the mailbox changed beyond what the session has seen (as of the last poll)?"""
        return sub.key in self.gone or self.known.get(sub.key, 0) > highestmodseq

    async def fresh(self, timeout: float = 10.0) -> None:
        """Wait for a poll that starts after this call (NOOP, CHECK)."""
        if self._next_poll is None:
            self._next_poll = asyncio.get_running_loop().create_future()
        waiter = self._next_poll
        self._wake.set()
        self._ensure_running()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiter), timeout)

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="imap-watcher")

    async def _run(self) -> None:
        while self._subscriptions or self._next_poll is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            gap = self._last_start + self.min_gap - time.monotonic()
            if gap > 0:
                await asyncio.sleep(gap)
            self._last_start = time.monotonic()
            waiter, self._next_poll = self._next_poll, None
            try:
                await self._poll()
            except Exception:  # the poller must outlive any one failure
                log.exception("imap watcher: poll failed")
            finally:
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)

    async def _poll(self) -> None:
        keys = list(self._subscriptions)
        if not keys:
            return
        self.stats.polls += 1
        for start in range(0, len(keys), BATCH):
            chunk = keys[start : start + BATCH]
            request = WatchMailboxes(
                [k[0] for k in chunk], [k[1] for k in chunk], [self.known.get(k, 0) for k in chunk]
            )
            self.stats.calls += 1
            token = BACKGROUND.set(True)  # not any client's command: kept out of their counts
            try:
                result = await self.functions.call("MailboxFunction", request)
            except TemporaryFailure:
                self.stats.failures += 1
                continue
            finally:
                BACKGROUND.reset(token)
            if not result.get("ok"):
                self.stats.failures += 1
                log.warning("imap watcher: watch refused: %s", result.get("error"))
                continue
            for entry in result.get("changed") or []:
                key = chunk[int(entry["index"])]
                if entry.get("gone"):
                    self.gone.add(key)
                else:
                    self.known[key] = max(self.known.get(key, 0), int(entry.get("highestmodseq", 0)))
                for sub in self._subscriptions.get(key, ()):
                    sub.changed.set()
