"""The IMAP command parser (gateway/imap/syntax.py): no I/O, literals interrupt it,
syntax errors are values the session turns into BAD. RFC 3501 §9 unless noted."""

from __future__ import annotations

import contextlib
import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.imap import syntax
from gateway.imap.grammar import (
    FetchAtt,
    Limits,
    NeedLiteral,
    ParseError,
    SearchKey,
    Section,
    SequenceSet,
    Staged,
)
from gateway.imap.syntax import parse_command


def parse(text: bytes, **kwargs):
    command, rest = parse_command(text + b"\r\n", **kwargs)
    assert rest == b""
    return command


@pytest.mark.parametrize(
    ("line", "name", "args"),
    [
        pytest.param(b"a1 capability", "CAPABILITY", syntax.NoArgs(), id="case-insensitive-name"),
        pytest.param(b"a LOGIN joe secret", "LOGIN", syntax.Login(b"joe", b"secret"), id="login-atoms"),
        pytest.param(b'a LOGIN "jo\\"e" "p w"', "LOGIN", syntax.Login(b'jo"e', b"p w"), id="login-quoted"),  # §4.3
        pytest.param(b"a LOGIN j]oe x", "LOGIN", syntax.Login(b"j]oe", b"x"), id="astring-with-bracket"),
        pytest.param(b"a SELECT inbox", "SELECT", syntax.Select(b"inbox"), id="select"),
        pytest.param(b"a EXAMINE INBOX (CONDSTORE)", "EXAMINE", syntax.Select(b"INBOX", True), id="condstore-param"),  # RFC 7162 §3.1.8
        pytest.param(b'a RENAME "a b" c', "RENAME", syntax.Rename(b"a b", b"c"), id="rename"),
        pytest.param(b"a STATUS INBOX (MESSAGES UIDNEXT)", "STATUS", syntax.StatusCommand(b"INBOX", ("MESSAGES", "UIDNEXT")), id="status"),
        pytest.param(b"a LSUB \"\" *", "LSUB", syntax.ListCommand(b"", (b"*",), frozenset({"SUBSCRIBED", "LSUB"})), id="lsub"),
        pytest.param(b"a UID EXPUNGE 1:3", "UID EXPUNGE", syntax.UidExpunge(SequenceSet(((1, 3),))), id="uid-expunge"),  # RFC 4315 §2.1
        pytest.param(b"a ENABLE CONDSTORE X-FOO", "ENABLE", syntax.Enable(("CONDSTORE", "X-FOO")), id="enable"),  # RFC 5161
        pytest.param(b'a ID ("name" "x" "os" NIL)', "ID", syntax.Id(((b"name", b"x"), (b"os", None))), id="id"),  # RFC 2971
        pytest.param(b"a ID NIL", "ID", syntax.Id(None), id="id-nil"),
        pytest.param(b"a COPY 1,3:* Trash", "COPY", syntax.Copy(SequenceSet(((1, 1), (3, None))), b"Trash"), id="copy"),
        pytest.param(b"a UID MOVE * Junk", "UID MOVE", syntax.Copy(SequenceSet(((None, None),)), b"Junk"), id="uid-move"),  # RFC 6851
        pytest.param(b"a AUTHENTICATE plain AGpvZQBw", "AUTHENTICATE", syntax.Authenticate("PLAIN", b"\0joe\0p"), id="sasl-ir"),  # RFC 4959
        pytest.param(b"a AUTHENTICATE PLAIN =", "AUTHENTICATE", syntax.Authenticate("PLAIN", b""), id="sasl-ir-empty"),
    ],
)
def test_commands(line, name, args):
    command = parse(line)
    assert (command.name, command.args) == (name, args)


def test_list_extended():
    # RFC 5258 §3, RFC 5819
    command = parse(b'a LIST (SUBSCRIBED RECURSIVEMATCH) "" ("INBOX" Foo/%) RETURN (CHILDREN STATUS (MESSAGES))')
    assert command.args == syntax.ListCommand(
        b"", (b"INBOX", b"Foo/%"), frozenset({"SUBSCRIBED", "RECURSIVEMATCH"}), frozenset({"CHILDREN", "STATUS"}), ("MESSAGES",))


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        (b"FLAGS", (FetchAtt("FLAGS"),)),
        (b"FAST", (FetchAtt("FLAGS"), FetchAtt("INTERNALDATE"), FetchAtt("RFC822.SIZE"))),  # §6.4.5 macros
        (b"(UID RFC822.SIZE MODSEQ)", (FetchAtt("UID"), FetchAtt("RFC822.SIZE"), FetchAtt("MODSEQ"))),
        (b"BODY[]", (FetchAtt("BODY[]", Section()),)),
        (b"BODY.PEEK[1.2.MIME]<10.20>", (FetchAtt("BODY[]", Section((1, 2), "MIME"), peek=True, partial=(10, 20)),)),
        (b"(BODY[HEADER.FIELDS (From \"To\")])", (FetchAtt("BODY[]", Section((), "HEADER.FIELDS", ("FROM", "TO"))),)),
        (b"BODY[2.HEADER.FIELDS.NOT (X)]", (FetchAtt("BODY[]", Section((2,), "HEADER.FIELDS.NOT", ("X",))),)),
        (b"(BODY BODYSTRUCTURE ENVELOPE)", (FetchAtt("BODY"), FetchAtt("BODYSTRUCTURE"), FetchAtt("ENVELOPE"))),
    ],
)
def test_fetch_attributes(items, expected):
    assert parse(b"a FETCH 1 " + items).args.atts == expected


def test_fetch_changedsince():
    # RFC 7162 §3.1.4.1
    assert parse(b"a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)").args.changed_since == 12345


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(b"a FETCH 1 BODY[MIME]", id="mime-needs-a-part"),  # §6.4.5
        pytest.param(b"a FETCH 1 BODY[1.]", id="section-trailing-dot"),
        pytest.param(b"a FETCH 1 BODY[HEADER.FIELDS ()]", id="empty-header-list"),
        pytest.param(b"a FETCH 1 NOPE", id="unknown-att"),
        pytest.param(b"a FETCH 0 FLAGS", id="zero-seq"),
        pytest.param(b"a FETCH 1: FLAGS", id="open-range"),
        pytest.param(b"a FETCH 4294967296 FLAGS", id="number-too-large"),
        pytest.param(b"a FETCH 1 ()", id="empty-list"),
        pytest.param(b"a STORE 1 +FLAGS (\\Recent)", id="store-recent"),  # §2.3.2
        pytest.param(b"a STORE 1 FLAG (\\Seen)", id="store-bad-item"),
        pytest.param(b"a SEARCH", id="search-no-key"),
        pytest.param(b"a SEARCH FOO", id="search-unknown-key"),
        pytest.param(b"a SEARCH BEFORE 31-Feb-2020", id="invalid-date"),
        pytest.param(b"a SELECT INBOX (QRESYNC)", id="unknown-select-param"),
        pytest.param(b"a LIST (RECURSIVEMATCH) \"\" *", id="recursivematch-alone"),  # RFC 5258 §3
        pytest.param(b'a APPEND INBOX "32-Jan-2020 00:00:00 +0000" {1}', id="bad-date-time"),
        pytest.param(b"a LOGIN a", id="missing-argument"),
        pytest.param(b"a  NOOP", id="double-space"),
        pytest.param(b"a NOOP ", id="trailing-space"),
        pytest.param(b"a AUTHENTICATE PLAIN abc", id="bad-base64"),
    ],
)
def test_syntax_errors(line):
    with pytest.raises(ParseError):
        parse_command(line + b"\r\n")


def test_parse_error_carries_the_tag():
    with pytest.raises(ParseError) as error:
        parse_command(b"x7 FETCH nope\r\n")
    assert syntax.error_tag(error.value) == "x7"
    with pytest.raises(ParseError) as error:
        parse_command(b"x8 BLAH\r\n")
    assert syntax.error_tag(error.value) == "x8"


def test_search_keys():
    command = parse(b'a SEARCH RETURN (MIN COUNT) CHARSET UTF-8 OR FROM "x" NOT SEEN (1:3 UID 5) HEADER X-A "b" SINCE 1-Feb-2020 MODSEQ 7')
    args: syntax.Search = command.args
    assert args.returns == frozenset({"MIN", "COUNT"}) and args.charset == "UTF-8"  # RFC 4731 §3
    assert args.key == SearchKey("AND", (
        SearchKey("OR", (SearchKey("FROM", (b"x",)), SearchKey("NOT", (SearchKey("SEEN"),)))),
        SearchKey("AND", (SearchKey("SEQ", (SequenceSet(((1, 3),)),)), SearchKey("UID", (SequenceSet(((5, 5),)),)))),
        SearchKey("HEADER", (b"X-A", b"b")),
        SearchKey("SINCE", (datetime.date(2020, 2, 1),)),
        SearchKey("MODSEQ", (7,)),
    ))
    assert parse(b"a SEARCH RETURN () ALL").args.returns == frozenset({"ALL"})  # RFC 4731 §3.1


def test_store():
    args = parse(b"a STORE 2:4 (UNCHANGEDSINCE 9) -FLAGS.SILENT \\Seen $Work").args
    assert args == syntax.Store(SequenceSet(((2, 4),)), "-", True, ("\\Seen", "$Work"), 9)


# -- literals (RFC 3501 §4.3, RFC 7888) ----------------------------------------------------


def test_synchronizing_literal_interrupts_before_its_octets():
    buf = b"a LOGIN {3}\r\n"
    with pytest.raises(NeedLiteral) as need:
        parse_command(buf)
    assert (need.value.size, need.value.synchronizing, need.value.message) == (3, True, False)
    assert buf[need.value.offset : need.value.offset + 1] == b"{"
    # the session reads the octets and the next line, then parses again
    buf += b"joe {4+}\r\n"
    provided = {need.value.offset}
    with pytest.raises(NeedLiteral) as need2:
        parse_command(buf, provided)
    assert (need2.value.size, need2.value.synchronizing) == (4, False)
    buf += b"pass\r\n"
    provided.add(need2.value.offset)
    command, rest = parse_command(buf, provided)
    assert command.args == syntax.Login(b"joe", b"pass") and rest == b""


def test_append_message_literal_is_staged():
    buf = b'a APPEND Sent (\\Seen) "17-Jul-1996 02:44:25 -0700" {310}\r\n'
    with pytest.raises(NeedLiteral) as need:
        parse_command(buf)
    assert need.value.message and need.value.size == 310
    staged = Staged("staging/x", 310)
    command, _ = parse_command(buf + b"\r\n", external={need.value.offset: staged})
    args: syntax.Append = command.args
    assert (args.mailbox, args.flags, args.message) == (b"Sent", ("\\Seen",), staged)
    assert args.date == datetime.datetime(1996, 7, 17, 2, 44, 25, tzinfo=datetime.timezone(-datetime.timedelta(hours=7)))


def test_literal_shorter_than_announced_is_an_error():
    with pytest.raises(ParseError):
        parse_command(b"a LOGIN {5}\r\nab", {8})


# -- limits --------------------------------------------------------------------------------


def test_nesting_limit():
    parse(b"a SEARCH " + b"(" * 16 + b"ALL" + b")" * 16)
    with pytest.raises(ParseError, match="too deeply nested"):
        parse_command(b"a SEARCH " + b"(" * 17 + b"ALL" + b")" * 17 + b"\r\n")
    with pytest.raises(ParseError, match="too deeply nested"):
        parse_command(b"a SEARCH " + b"NOT " * 17 + b"ALL\r\n")


def test_sequence_set_limit():
    items = b",".join(b"%d" % n for n in range(1, 101))
    parse(b"a FETCH " + items + b" FLAGS", limits=Limits(max_sequence_items=100))
    with pytest.raises(ParseError, match="too many items"):
        parse_command(b"a FETCH " + items + b",101 FLAGS\r\n", limits=Limits(max_sequence_items=100))


def test_sequence_set_resolution():
    # RFC 3501 §9: "*" is the largest number in use; n:* with n beyond it still includes it
    assert SequenceSet(((5, None),)).resolve(3) == [(3, 5)]
    assert SequenceSet(((None, 2), (4, 4))).resolve(10) == [(2, 10), (4, 4)]


# -- properties -----------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_any_input_is_a_command_an_error_or_a_literal_wait(data):
    with contextlib.suppress(ParseError, NeedLiteral):
        parse_command(data + b"\r\n")


_PIECES = st.sampled_from([b"a", b" ", b"FETCH", b"SEARCH", b"STORE", b"1:*", b"(", b")", b"[", b"]", b"{3}", b"{2+}", b"\r\n",
                           b'"', b"\\", b"NOT", b"OR", b"BODY[", b"HEADER.FIELDS", b"<1.2>", b"UID", b"*", b",", b"%"])


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECES, max_size=30))
def test_grammar_shaped_input_never_crashes(pieces):
    with contextlib.suppress(ParseError, NeedLiteral):
        parse_command(b"".join(pieces) + b"\r\n")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 2**32 - 1), st.integers(1, 2**32 - 1)), min_size=1, max_size=20))
def test_sequence_sets_round_trip(ranges):
    text = b",".join(b"%d:%d" % r for r in ranges)
    assert parse(b"a UID FETCH " + text + b" FLAGS").args.sequence == SequenceSet(tuple(ranges))
