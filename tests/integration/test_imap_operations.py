"""The MailboxFunction operations added for IMAP (select, watch, search) and what IMAP
commands cost in AWS requests (DESIGN.md contract 4), counted on the emulated AWS."""

from __future__ import annotations

import json

from mailcore.accounting import count_requests
from mailcore.contracts import SearchMessages, SelectMailbox, StoreFlags, WatchMailboxes

from tests.integration.test_imap_support import Raw, deliver, login_raw, message

pytest_plugins = ["tests.integration.test_imap_support"]


def call(transport, request) -> dict:
    return transport.invoke("MailboxFunction", request.to_event())


def test_select_claims_recent_once_with_two_requests(store, function_transport, user):
    deliver(store, function_transport, user, message())
    with count_requests() as counter:
        first = call(function_transport, SelectMailbox(user, "INBOX"))
    # RFC 3501 §2.3.2: one UpdateItem (claim) and one Query page
    assert counter.snapshot() == {"dynamodb.UpdateItem": 1, "dynamodb.Query": 1}
    assert first["recent_uid"] == 1 and [m["uid"] for m in first["messages"]] == [1] and not first["more"]
    assert "meta" not in first["messages"][0]  # summaries only
    second = call(function_transport, SelectMailbox(user, "INBOX"))
    assert second["recent_uid"] == 2  # nothing is recent to a later session
    with count_requests() as counter:
        examine = call(function_transport, SelectMailbox(user, "INBOX", readonly=True))
    assert counter.snapshot() == {"dynamodb.GetItem": 1, "dynamodb.Query": 1}  # EXAMINE claims nothing
    assert examine["mailbox"]["messages"] == 1


def test_select_pages(store, function_transport, user):
    for n in range(3):
        deliver(store, function_transport, user, message(f"m{n}"))
    page = call(function_transport, SelectMailbox(user, "INBOX", limit=2))
    assert [m["uid"] for m in page["messages"]] == [1, 2] and page["more"]
    rest = call(function_transport, SelectMailbox(user, "INBOX", readonly=True, after_uid=2, limit=2))
    assert [m["uid"] for m in rest["messages"]] == [3] and not rest["more"]


def test_select_missing_mailbox(function_transport, user):
    result = call(function_transport, SelectMailbox(user, "Nope"))
    assert (result["ok"], result["error"]) == (False, "NONEXISTENT")


def test_watch_is_one_batch_get_and_answers_only_changes(store, function_transport, user):
    status = store.mailboxes.get(user, "INBOX")
    request = WatchMailboxes([user] * 3, ["INBOX", "Sent", "Nope"], [status.highestmodseq, 0, 0])
    with count_requests() as counter:
        result = call(function_transport, request)
    assert counter.snapshot() == {"dynamodb.BatchGetItem": 1}
    changed = {c["index"]: c for c in result["changed"]}
    assert set(changed) == {1, 2} and changed[2] == {"index": 2, "gone": True}
    deliver(store, function_transport, user, message())
    assert [c["index"] for c in call(function_transport, request)["changed"]] == [0, 1, 2]


def test_watch_rejects_ragged_input(function_transport, user):
    result = call(function_transport, WatchMailboxes([user], ["INBOX", "Sent"], [0]))
    assert (result["ok"], result["error"]) == (False, "CLIENTBUG")


def test_search_reads_only_what_its_keys_need(store, function_transport, user):
    deliver(store, function_transport, user, message("apples", "pears\r\n"))
    deliver(store, function_transport, user, message("plums", "figs\r\n"))
    call(function_transport, StoreFlags(user, "INBOX", [2], "+", ["\\Flagged"]))

    def search(program: list) -> tuple[list[int], dict[str, int]]:
        with count_requests() as counter:
            result = call(function_transport, SearchMessages(user, "INBOX", json.dumps(program)))
        assert result["ok"], result
        return result["uids"], counter.snapshot()

    assert search(["flag", "\\Flagged"]) == ([2], {"dynamodb.GetItem": 1, "dynamodb.Query": 1})
    uids, requests = search(["subject", "APPLES"])
    # metadata comes with the items: one Query page (moto answers a second, empty one)
    assert uids == [1] and requests["dynamodb.Query"] <= 2 and set(requests) == {"dynamodb.GetItem", "dynamodb.Query"}
    uids, requests = search(["body", "figs"])
    assert uids == [2] and requests["s3.GetObject"] <= 2
    assert search(["and", ["uid", [[2, 9]]], ["all"]])[0] == [2]


def test_search_program_errors_are_clientbug(function_transport, user):
    result = call(function_transport, SearchMessages(user, "INBOX", '["nope"]'))
    assert (result["ok"], result["error"]) == (False, "CLIENTBUG")


def test_imap_command_costs(imap_gateway, store, function_transport, user):
    for n in range(5):
        deliver(store, function_transport, user, message(f"m{n}"))
    client = Raw.open(imap_gateway)
    login_raw(client, user)
    with count_requests() as counter:
        client.command(b"s", b"SELECT INBOX")
    assert counter.snapshot() == {"dynamodb.UpdateItem": 1, "dynamodb.Query": 1}
    with count_requests() as counter:
        client.command(b"f", b"FETCH 1:* (FLAGS UID RFC822.SIZE INTERNALDATE)")
        client.command(b"s2", b"SEARCH UNSEEN LARGER 10")
    assert counter.total == 0  # answered from the session's view
    with count_requests() as counter:
        client.command(b"e", b"FETCH 1:* (ENVELOPE BODYSTRUCTURE)")
    assert counter.snapshot() == {"dynamodb.GetItem": 1, "dynamodb.BatchGetItem": 1}
    with count_requests() as counter:
        client.command(b"e2", b"FETCH 1:* (ENVELOPE BODYSTRUCTURE)")
    assert counter.total == 0  # the gateway caches metadata by blob
    with count_requests() as counter:
        client.command(b"b", b"FETCH 1:5 (BODY.PEEK[])")
        client.command(b"b2", b"FETCH 1:5 (BODY.PEEK[])")
    assert counter.snapshot() == {"s3.GetObject": 5}  # and message bytes
    client.close()
