"""Every sample event in events/ is valid input to its handler (the same files serve
``sam local invoke``). The handlers run in-process on the emulated AWS, as locally."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from mailcore.contracts import AUTH_REQUESTS, INGEST_REQUESTS, MAILBOX_REQUESTS, RELAY_REQUESTS, SUBMIT_REQUESTS

from tests.loopback import SINKS

# The loopback DNS server and MXs the relay sample needs (dns_server, relay_env, pump).
pytest_plugins = ["tests.outbound"]

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
#: Mailbox operations in an order where each sample's objects exist when it runs.
MAILBOX_ORDER = [
    "list",
    "status",
    "messages",
    "fetch",
    "store",
    "changes",
    "select",
    "watch",
    "search",
    "append",
    "create",
    "rename",
    "subscribe",
    "copy",
    "expunge",
    "remove",
    "delete",
    "lock",
    "unlock",
]
REQUESTS = {
    "auth": AUTH_REQUESTS,
    "ingest": INGEST_REQUESTS,
    "mailbox": MAILBOX_REQUESTS,
    "submit": SUBMIT_REQUESTS,
    # The relay's sample is an SQS event whose record body is the "relay" request.
    "relay": RELAY_REQUESTS,
}


def test_every_operation_has_a_sample_and_every_sample_an_operation():
    for function, requests in REQUESTS.items():
        samples = {p.stem for p in (EVENTS / function).glob("*.json")}
        assert samples == {r.op for r in requests}, function
    assert set(MAILBOX_ORDER) == {r.op for r in MAILBOX_REQUESTS}


@pytest.fixture
def demo(store):
    """The demo account the samples name, fresh, with the sample message staged."""
    from mailcore.errors import AlreadyExists, NotFound

    with contextlib.suppress(AlreadyExists):
        store.accounts.add_domain("example.test")
    with contextlib.suppress(NotFound):
        store.remove_user("demo@example.test")
    store.add_user("demo@example.test", "demo-password")
    raw = (EVENTS / "sample-message.eml").read_bytes()
    store.blobs.s3.put_object(Bucket=store.blobs.bucket, Key="staging/sample-message", Body=raw)
    return store


def invoke(functions, name: str, sample: Path) -> dict:
    return functions.invoke(f"{name.capitalize()}Function", json.loads(sample.read_text()))


def test_samples_are_accepted_by_their_handlers(demo, function_transport):
    # The ingest samples first: deliver puts UID 1 into INBOX, which the others use.
    for sample in [*sorted((EVENTS / "auth").glob("*.json")), EVENTS / "ingest/resolve.json", EVENTS / "ingest/deliver.json"]:
        result = invoke(function_transport, sample.parent.name, sample)
        assert result["ok"], (sample.name, result)
    for op in MAILBOX_ORDER:
        result = invoke(function_transport, "mailbox", EVENTS / "mailbox" / f"{op}.json")
        assert result["ok"], (op, result)


def test_refusals_are_results_not_errors(demo, function_transport):
    result = function_transport.invoke(
        "AuthFunction", {"op": "authenticate", "username": "demo@example.test", "password": "nope"}
    )
    assert result == {"ok": False, "error": "AUTHENTICATIONFAILED", "message": "authentication failed", "delay": 0}
    result = function_transport.invoke(
        "MailboxFunction", {"op": "status", "user": "demo@example.test", "mailbox": "Missing"}
    )
    assert (result["ok"], result["error"]) == (False, "NONEXISTENT")
    result = function_transport.invoke("MailboxFunction", {"op": "status", "user": "demo@example.test"})
    assert (result["ok"], result["error"]) == (False, "CLIENTBUG")


def test_a_user_cannot_reach_another_users_mailbox(demo, function_transport, user):
    # GIVEN demo has mail; WHEN another user names demo's INBOX THEN it sees its own INBOX only
    invoke(function_transport, "ingest", EVENTS / "ingest/deliver.json")
    theirs = function_transport.invoke("MailboxFunction", {"op": "messages", "user": user, "mailbox": "INBOX"})
    assert theirs["ok"] and theirs["messages"] == []
    assert theirs["mailbox"]["user"] == user


def test_submit_and_relay_samples_are_accepted(demo, function_transport, dns_server, relay_env, pump):
    # GIVEN example.net's MX is the loopback server on 127.0.0.21
    dns_server.zone.add("example.net", "MX", "10 mx.example.net.")
    dns_server.zone.add("mx.example.net", "A", SINKS[0])
    # WHEN the submit sample is handled, and the relay sample (an SQS event), and the queue
    submitted = invoke(function_transport, "submit", EVENTS / "submit/submit.json")
    assert submitted["ok"], submitted
    relayed = function_transport.invoke("RelayFunction", json.loads((EVENTS / "relay/relay.json").read_text()))
    assert relayed == {"batchItemFailures": []}
    pump.run()
    # THEN example.net received both messages
    subjects = sorted(m.data.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0] for m in relay_env.received("friend@example.net"))
    assert subjects == [b"Sample message for the events/ fixtures", b"Sample outbound message"]
