"""AWS request accounting: how many requests an operation costs, per service and operation.

Every client made by :class:`mailcore.aws.Clients` reports its requests (botocore's
``before-send`` event, so retries count too). Tests assert exact costs; benchmarks print them.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from mailcore.aws import add_request_observer, remove_request_observer


class RequestCounter:
    """Counts requests as ``"service.Operation"`` keys, for example ``"dynamodb.Query"``."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, service: str, operation: str) -> None:
        with self._lock:
            self.counts[f"{service}.{operation}"] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def by_service(self) -> dict[str, int]:
        totals: Counter[str] = Counter()
        for key, n in self.counts.items():
            totals[key.split(".", 1)[0]] += n
        return dict(totals)

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


@contextmanager
def count_requests(background: bool = False) -> Iterator[RequestCounter]:
    """Count every AWS request made inside the ``with`` block (all threads); with
    ``background`` also those of work marked :data:`mailcore.aws.BACKGROUND`."""
    counter = RequestCounter()
    add_request_observer(counter, background)
    try:
        yield counter
    finally:
        remove_request_observer(counter)
