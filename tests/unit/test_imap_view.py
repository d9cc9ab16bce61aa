"""The selected mailbox as a session sees it: sequence numbers, other sessions' changes,
and the order of untagged updates (RFC 3501 §2.3.1.2, §5.2, §7.4.1)."""

from __future__ import annotations

import pytest

from gateway.imap.grammar import SequenceSet
from gateway.imap.responses import Bad
from gateway.imap.view import MailboxGone, MailboxView

MAILBOX = {"mailbox_id": "m1", "uidvalidity": 7, "uidnext": 11, "highestmodseq": 20}


def record(uid: int, flags=(), modseq: int = 5) -> dict:
    return {"uid": uid, "flags": list(flags), "modseq": modseq, "size": 100, "internaldate": 0, "sha256": "0" * 64}


def view(uids=(2, 4, 6, 8, 10), recent_uid: int = 8) -> MailboxView:
    return MailboxView("INBOX", MAILBOX, [record(u) for u in uids], recent_uid, readonly=False)


def changes(changed=(), expunged=(), **mailbox) -> dict:
    return {"mailbox": {**MAILBOX, **mailbox}, "changed": list(changed), "expunged": list(expunged)}


def test_sequence_numbers_and_uids():
    v = view()
    assert [(s, m.uid) for s, m in v.by_sequence(SequenceSet(((2, 3), (None, None))))] == [(2, 4), (3, 6), (5, 10)]
    assert [(s, m.uid) for s, m in v.by_uid(SequenceSet(((3, 8),)))] == [(2, 4), (3, 6), (4, 8)]
    # RFC 3501 §6.4.8: UID 11:* includes the last message
    assert [m.uid for _, m in v.by_uid(SequenceSet(((11, None),)))] == [10]
    with pytest.raises(Bad):
        v.by_sequence(SequenceSet(((6, 6),)))
    assert v.recent == 2 and v.first_unseen() == 1


def test_empty_mailbox_star_matches_nothing():
    v = view(())
    assert v.by_sequence(SequenceSet(((1, None),))) == []
    with pytest.raises(Bad):
        v.by_sequence(SequenceSet(((1, 1),)))


def test_new_message_and_flag_change():
    v = view()
    v.apply_changes(changes([record(12, modseq=21), record(4, ["\\Seen"], modseq=22)], highestmodseq=22), condstore=False)
    assert v.updates(allow_expunge=False, condstore=False) == [
        b"* 6 EXISTS\r\n", b"* 3 RECENT\r\n", b"* 2 FETCH (FLAGS (\\Seen))\r\n"]
    assert v.updates(allow_expunge=False, condstore=False) == []


def test_expunge_waits_until_allowed_and_renumbers():
    v = view()
    v.apply_changes(changes(expunged=[4, 8]), condstore=False)
    # RFC 3501 §7.4.1: not during FETCH/STORE/SEARCH; the numbers stay
    assert v.updates(allow_expunge=False, condstore=False) == []
    assert v.seq_of(10) == 5
    assert v.updates(allow_expunge=True, condstore=False) == [b"* 4 EXPUNGE\r\n", b"* 2 EXPUNGE\r\n"]
    assert v.uids == [2, 6, 10] and v.seq_of(10) == 3


def test_duplicates_and_own_changes_are_not_reported_twice():
    v = view()
    v.apply_stored([{"uid": 4, "flags": ["\\Flagged"], "modseq": 30}])
    v.apply_changes(changes([record(4, ["\\Flagged"], modseq=30)]), condstore=False)
    assert v.updates(allow_expunge=True, condstore=False) == []


def test_new_keyword_announces_flags():
    v = view()
    v.apply_changes(changes([record(2, ["$Label"], modseq=40)]), condstore=True)
    lines = v.updates(allow_expunge=True, condstore=True)
    assert lines[0] == b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label)\r\n"
    assert lines[1].startswith(b"* OK [PERMANENTFLAGS (")
    assert lines[2] == b"* 1 FETCH (FLAGS ($Label) MODSEQ (40))\r\n"  # RFC 7162 §3.1.4


def test_late_lower_uid_is_left_for_the_next_select():
    v = view()
    v.apply_changes(changes([record(12, modseq=21)]), condstore=False)
    v.apply_changes(changes([record(11, modseq=21)]), condstore=False)
    assert 11 not in v.messages


def test_uidvalidity_change_or_new_mailbox_id_is_gone():
    with pytest.raises(MailboxGone):
        view().apply_changes(changes(uidvalidity=8), condstore=False)
    with pytest.raises(MailboxGone):
        view().apply_changes(changes(mailbox_id="other"), condstore=False)


def test_change_queries_start_behind_the_last_but_one_sync():
    v = view()
    assert v.since == 12  # 20 - MODSEQ_LAG
    v.apply_changes(changes(highestmodseq=30), condstore=False)
    assert v.since == 12
    v.apply_changes(changes(highestmodseq=40), condstore=False)
    assert v.since == 22
