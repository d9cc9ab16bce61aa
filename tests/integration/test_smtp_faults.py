"""Durability under failure (DESIGN.md contracts 2 and 3): when an AWS request fails during
delivery, the client gets 451 4.3.0 and nothing it could see as delivered; its retry of
the same transaction delivers exactly once.

Faults are injected where the requests leave: every client of mailcore.aws.Clients
reports each request before sending it (botocore ``before-send``), and an observer that
raises makes that request fail, whether the gateway (S3 staging) or the in-process
IngestFunction (S3 blobs, DynamoDB, EventBridge) sends it.
"""

from __future__ import annotations

import smtplib
import threading
from collections.abc import Iterator

import pytest
from mailcore.accounting import count_requests
from mailcore.aws import add_request_observer, remove_request_observer

from gateway.smtp import replies

from .conftest import new_user
from .test_smtp import MESSAGE, client_bytes, code, expect, inbox


class InjectedFault(Exception):
    """Not a botocore error, so botocore does not retry it away."""


class Faults:
    """Fail ``service.Operation`` requests: let ``skip`` of them pass, then fail ``times``."""

    def __init__(self) -> None:
        self.plan: dict[str, list[int]] = {}
        self.failed: list[str] = []
        self._lock = threading.Lock()

    def fail(self, operation: str, times: int = 1, skip: int = 0) -> None:
        with self._lock:
            self.plan[operation] = [skip, times]

    def __call__(self, service: str, operation: str) -> None:
        key = f"{service}.{operation}"
        with self._lock:
            plan = self.plan.get(key)
            if plan is None or plan[1] <= 0:
                return
            if plan[0] > 0:
                plan[0] -= 1
                return
            plan[1] -= 1
            self.failed.append(key)
        raise InjectedFault(key)


@pytest.fixture
def faults() -> Iterator[Faults]:
    observer = Faults()
    add_request_observer(observer)
    yield observer
    remove_request_observer(observer)


def send(gateway, recipients: list[str], body: bytes = MESSAGE) -> tuple[int, str]:
    """One transaction; the reply to the end of the data as (code, enhanced code)."""
    with smtplib.SMTP(*gateway.address("smtp"), local_hostname="client.example", timeout=30) as client:
        client.ehlo()
        client.mail("a@example.org")
        for recipient in recipients:
            assert client.rcpt(recipient)[0] == 250
        return code(client.data(body))


#: Over the gateway's inline limit (256 KiB): staged in S3 by the gateway, read by the function.
LARGE = MESSAGE + (b"x" * 998 + b"\r\n") * 300

# Each row: the request that fails, and why it matters. RFC 5321 §4.2.5: 451 is a
# "local error in processing"; the client keeps the message and retries (§4.5.4.1).
# (request, how many of its kind pass first, the message). A small message travels
# inline to the function (DESIGN.md contract 1), a large one through S3 staging.
FAULTS = [
    pytest.param("s3.PutObject", 0, MESSAGE, id="inline-function-stores-blob-S3"),
    pytest.param("dynamodb.UpdateItem", 0, MESSAGE, id="inline-UID-allocation-DynamoDB"),
    pytest.param("dynamodb.TransactWriteItems", 0, MESSAGE, id="inline-indexing-transaction-DynamoDB"),
    pytest.param("s3.PutObject", 0, LARGE, id="staged-gateway-staging-S3-put"),
    pytest.param("s3.GetObject", 0, LARGE, id="staged-function-reads-staging-S3"),
    pytest.param("s3.PutObject", 1, LARGE, id="staged-function-stores-blob-S3"),
    pytest.param("dynamodb.TransactWriteItems", 0, LARGE, id="staged-indexing-transaction-DynamoDB"),
]


@pytest.mark.parametrize(("operation", "skip", "message"), FAULTS)
def test_failed_request_gives_451_nothing_visible_and_the_retry_delivers_once(
    gateway, store, user, faults, operation, skip, message
):
    body = message + f"{operation} {skip}".encode() + b"\r\n"
    # GIVEN the request fails during delivery
    faults.fail(operation, skip=skip)
    # WHEN a message is handed over THEN the client is told to try again, and nothing shows
    assert send(gateway, [user], body) == expect(replies.S451_TEMPORARY)
    assert faults.failed == [operation]
    assert inbox(store, user) == []
    assert store.mailboxes.get(user, "INBOX").messages == 0
    # WHEN the client retries THEN it is delivered, once
    assert send(gateway, [user], body)[0] == 250
    assert [client_bytes(m) for m in inbox(store, user)] == [body]


def test_failed_resolution_at_delivery_gives_451_and_the_retry_delivers_once(gateway, store, user, faults, monkeypatch):
    # Resolutions are cached (mailcore.accounts); with the cache off, the delivery
    # resolves the recipient again, and that read may fail too (the first is RCPT's).
    cache = store.accounts.cache
    monkeypatch.setattr(cache, "positive_ttl", 0.0)
    monkeypatch.setattr(cache, "negative_ttl", 0.0)
    cache.invalidate()
    body = MESSAGE + b"resolution at delivery\r\n"
    faults.fail("dynamodb.BatchGetItem", skip=1)
    assert send(gateway, [user], body) == expect(replies.S451_TEMPORARY)
    assert faults.failed == ["dynamodb.BatchGetItem"]
    assert inbox(store, user) == []
    assert send(gateway, [user], body)[0] == 250
    assert [client_bytes(m) for m in inbox(store, user)] == [body]


def test_event_failure_after_indexing_is_451_and_the_retry_does_not_duplicate(gateway, store, user, faults):
    # The message is indexed before PutEvents fails: the retry finds it delivered (dedup key)
    body = MESSAGE + b"events\r\n"
    faults.fail("eventbridge.PutEvents")
    assert send(gateway, [user], body) == expect(replies.S451_TEMPORARY)
    assert faults.failed == ["eventbridge.PutEvents"]
    assert send(gateway, [user], body)[0] == 250
    assert [client_bytes(m) for m in inbox(store, user)] == [body]
    assert store.mailboxes.get(user, "INBOX").messages == 1


def test_failure_for_the_second_recipient_is_retried_without_duplicating_the_first(gateway, store, domain, faults):
    bob, carol = new_user(store, domain), new_user(store, domain)
    body = MESSAGE + b"two recipients\r\n"
    # GIVEN the first recipient's indexing transaction succeeds and the second's fails
    faults.fail("dynamodb.TransactWriteItems", skip=1)
    assert send(gateway, [bob, carol], body) == expect(replies.S451_TEMPORARY)
    assert faults.failed == ["dynamodb.TransactWriteItems"]
    assert len(inbox(store, bob)) + len(inbox(store, carol)) == 1
    # WHEN the client retries THEN each recipient has the message once
    assert send(gateway, [bob, carol], body)[0] == 250
    assert [client_bytes(m) for m in inbox(store, bob)] == [body]
    assert [client_bytes(m) for m in inbox(store, carol)] == [body]


def test_retry_after_a_lost_250_delivers_nothing_and_drops_its_blob(gateway, store, user):
    # RFC 5321 §4.1.1.4: a client may retry a transaction whose 250 it never saw
    body = MESSAGE + b"lost reply\r\n"
    assert send(gateway, [user], body)[0] == 250
    with count_requests() as counter:
        assert send(gateway, [user], body)[0] == 250
    assert len(inbox(store, user)) == 1
    # the retry's blob differs in our trace fields, so nothing references it: it is deleted
    counts = counter.snapshot()
    assert counts["s3.PutObject"] == 1  # the blob (the message travelled inline, unstaged)
    assert counts["s3.DeleteObject"] == 1
    # the UID; then, the retry's blob unreferenced, its deletion claimed and ended (mailcore.blobstore)
    assert counts["dynamodb.UpdateItem"] == 3
    assert "dynamodb.TransactWriteItems" in counts  # the dedup record refused the second index entry
    # the first delivery's event published again (at least once), from its marker
    assert counts["dynamodb.GetItem"] == 2 and counts["eventbridge.PutEvents"] == 1


def test_failure_at_rcpt_is_451_for_that_recipient(gateway, user, faults):
    # the resolve operation could not answer: RFC 5321 §4.2.5 temporary, the client retries later
    faults.fail("dynamodb.BatchGetItem")
    with smtplib.SMTP(*gateway.address("smtp"), timeout=30) as client:
        client.ehlo()
        client.mail("a@example.org")
        assert code(client.rcpt(user)) == expect(replies.S451_TEMPORARY)
        assert code(client.rcpt(user)) == expect(replies.S250_RECIPIENT_OK)
