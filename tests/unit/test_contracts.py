"""Events are checked against their contract before any work is done."""

from __future__ import annotations

import pytest
from mailcore.contracts import (
    INGEST_REQUESTS,
    MAILBOX_REQUESTS,
    ContractError,
    Deliver,
    Expunge,
    StoreFlags,
    parse_request,
)


def test_round_trip():
    request = Deliver("staging/x", "a@b.example", ["c@d.example"], "k")
    assert parse_request(request.to_event(), INGEST_REQUESTS) == request


def test_defaults_and_optional_fields():
    assert parse_request({"op": "expunge", "user": "u@d.example", "mailbox": "INBOX"}, MAILBOX_REQUESTS) == Expunge(
        "u@d.example", "INBOX", None
    )
    parsed = parse_request(
        {"op": "store", "user": "u", "mailbox": "INBOX", "uids": [1], "flags": ["\\Seen"]}, MAILBOX_REQUESTS
    )
    assert isinstance(parsed, StoreFlags) and parsed.mode == "+"


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(None, id="not-an-object"),
        pytest.param({"op": "nope"}, id="unknown-op"),
        pytest.param({"op": "deliver", "staging_key": "k", "sender": "s"}, id="missing-field"),
        pytest.param({"op": "store", "user": "u", "mailbox": "INBOX", "uids": ["1"]}, id="wrong-item-type"),
        pytest.param({"op": "store", "user": "u", "mailbox": "INBOX", "uids": [True]}, id="bool-is-not-int"),
        pytest.param({"op": "list", "user": 7}, id="wrong-type"),
    ],
)
def test_rejected(event):
    with pytest.raises(ContractError):
        parse_request(event, MAILBOX_REQUESTS + INGEST_REQUESTS)
