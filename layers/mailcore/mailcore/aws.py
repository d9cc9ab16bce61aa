"""Lazily created boto3 clients.

Clients are built on first use, never at import, so moto (or any endpoint given by
``AWS_ENDPOINT_URL``, which botocore reads itself) is in place before they exist.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config

_CONFIG = Config(retries={"max_attempts": 3, "mode": "standard"}, max_pool_connections=32)

#: Called as ``observer(service, operation)`` for every HTTP request any client sends.
RequestObserver = Callable[[str, str], None]
_observers: list[tuple[RequestObserver, bool]] = []

#: Set (in a context that function calls inherit) by work that runs on its own rather
#: than for a client's command, such as the IMAP watcher's polling: observers that did
#: not ask for background requests do not see them, so a test's count is its own.
BACKGROUND: ContextVar[bool] = ContextVar("aws_background", default=False)


def add_request_observer(observer: RequestObserver, background: bool = False) -> None:
    _observers.append((observer, background))


def remove_request_observer(observer: RequestObserver) -> None:
    _observers[:] = [(o, b) for o, b in _observers if o is not observer]


def _before_send(event_name: str, **kwargs: Any) -> None:
    # event_name is "before-send.<service>.<Operation>"; retries send again and count again.
    _, service, operation = event_name.split(".", 2)
    background = BACKGROUND.get()
    for observer, wants_background in list(_observers):
        if wants_background or not background:
            observer(service, operation)


def observe(client: Any) -> Any:
    """Report every request of ``client`` to the registered observers."""
    client.meta.events.register("before-send", _before_send)
    return client


@dataclass
class Clients:
    """A set of AWS clients sharing one boto3 session."""

    session: Any = None
    _clients: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, service: str) -> Any:
        client = self._clients.get(service)
        if client is None:
            with self._lock:
                client = self._clients.get(service)
                if client is None:
                    session = self.session or boto3.session.Session()
                    self.session = session
                    client = observe(session.client(service, config=_CONFIG))
                    self._clients[service] = client
        return client

    @property
    def dynamodb(self) -> Any:
        return self.get("dynamodb")

    @property
    def s3(self) -> Any:
        return self.get("s3")

    @property
    def events(self) -> Any:
        return self.get("events")

    @property
    def sqs(self) -> Any:
        return self.get("sqs")
