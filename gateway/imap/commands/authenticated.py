"""The authenticated state (RFC 3501 §6.3), also legal when a mailbox is selected:
SELECT, EXAMINE, CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST, LSUB, STATUS,
APPEND; NAMESPACE (RFC 2342), ENABLE (RFC 5161), IDLE (RFC 2177).

Every mailbox is named by ``(principal, name)``: the function looks it up in the
principal's own partition, so no argument can reach another user's mailbox.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mailcore.contracts import (
    Append,
    CreateMailbox,
    DeleteMailbox,
    ListMailboxes,
    RenameMailbox,
    Status,
    Subscribe,
)

from gateway.imap import syntax
from gateway.imap.names import DELIMITER, INBOX, decode_name, encode_name, pattern_regex, tree
from gateway.imap.responses import ALREADYEXISTS, CANNOT, CLIENTBUG, NONEXISTENT, No, Response, ok
from gateway.imap.view import MailboxView
from gateway.mailbox_pages import select_pages

if TYPE_CHECKING:
    from gateway.imap.names import Entry
    from gateway.imap.session import Session


def _user(s: Session) -> str:
    assert s.user is not None
    return s.user


async def cmd_select(s: Session, c: syntax.Command) -> Response:
    """RFC 3501 §6.3.1 SELECT / §6.3.2 EXAMINE; RFC 7162 §3.1.8 (CONDSTORE) parameter and
    §3.1.2.1 HIGHESTMODSEQ. A failed SELECT leaves no mailbox selected."""
    args: syntax.Select = c.args
    readonly = c.name == "EXAMINE"
    name = decode_name(args.mailbox)
    s.deselect()  # RFC 3501 §6.3.1: the previous mailbox is closed without expunging
    if args.condstore:
        s.condstore = True
    pages = select_pages(s.call, _user(s), name, readonly, s.settings.select_page)
    result = await anext(pages)
    mailbox = result["mailbox"]
    recent_uid = int(result["recent_uid"])
    view = MailboxView(mailbox["name"], mailbox, result["messages"], recent_uid, readonly)
    async for result in pages:
        view.add_records(result["messages"], recent_uid)
    s.select(view)
    lines = [
        b"* FLAGS " + view.flags_response() + b"\r\n",
        b"* OK [PERMANENTFLAGS " + view.permanent_flags() + b"] Flags permitted\r\n",
        b"* %d EXISTS\r\n" % view.exists,
        b"* %d RECENT\r\n" % view.recent,
    ]
    unseen = view.first_unseen()
    if unseen is not None:
        lines.append(b"* OK [UNSEEN %d] First unseen\r\n" % unseen)
    lines += [
        b"* OK [UIDVALIDITY %d] UIDs valid\r\n" % view.uidvalidity,
        b"* OK [UIDNEXT %d] Predicted next UID\r\n" % view.uidnext,
        b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % view.highestmodseq,
    ]
    code = "READ-ONLY" if readonly else "READ-WRITE"
    return ok(f"{c.name} completed", code, lines)


async def cmd_create(s: Session, c: syntax.Command) -> Response:
    """RFC 3501 §6.3.3: superior names are created as needed; a trailing delimiter is
    dropped."""
    args: syntax.MailboxArg = c.args
    name = decode_name(args.mailbox).rstrip(DELIMITER)
    if name == INBOX:
        raise No("INBOX always exists", ALREADYEXISTS)
    await s.call(CreateMailbox(_user(s), name))
    return ok("CREATE completed")


async def cmd_delete(s: Session, c: syntax.Command) -> Response:
    """RFC 3501 §6.3.4: INBOX cannot be deleted; a mailbox with inferiors loses its
    messages and stays as a \\Noselect name (its children keep it in LIST)."""
    args: syntax.MailboxArg = c.args
    name = decode_name(args.mailbox)
    if name == INBOX:
        raise No("INBOX cannot be deleted", CANNOT)
    await s.call(DeleteMailbox(_user(s), name))
    if s.view is not None and s.view.name == name:
        s.deselect()
    return ok("DELETE completed")


async def cmd_rename(s: Session, c: syntax.Command) -> Response:
    """RFC 3501 §6.3.5: inferiors move along; renaming INBOX moves its messages to the
    new name and leaves an empty INBOX."""
    args: syntax.Rename = c.args
    old, new = decode_name(args.mailbox), decode_name(args.new_name).rstrip(DELIMITER)
    if new == INBOX:
        raise No("Cannot rename to INBOX", ALREADYEXISTS)
    if new == old or new.startswith(old + DELIMITER):
        raise No("Cannot rename a mailbox into itself", CANNOT)
    await s.call(RenameMailbox(_user(s), old, new))
    view = s.view
    if view is not None and (view.name == old or view.name.startswith(old + DELIMITER)):
        renamed = new + view.name[len(old) :]
        s.deselect()
        view.name = renamed
        s.select(view)
    return ok("RENAME completed")


async def cmd_subscribe(s: Session, c: syntax.Command) -> Response:
    """RFC 3501 §6.3.6 SUBSCRIBE / §6.3.7 UNSUBSCRIBE (the mailbox must exist)."""
    args: syntax.MailboxArg = c.args
    name = decode_name(args.mailbox)
    await s.call(Subscribe(_user(s), name, c.name == "SUBSCRIBE"))
    return ok(f"{c.name} completed")


def _sort_key(name: str) -> tuple[int, str]:
    return (0 if name == INBOX or name.startswith(INBOX + DELIMITER) else 1, name)


async def cmd_list(s: Session, c: syntax.Command) -> Response:
    """RFC 3501 §6.3.8 LIST / §6.3.9 LSUB, RFC 5258 selection and return options,
    RFC 3348 \\HasChildren, RFC 6154 special-use attributes, RFC 5819 RETURN (STATUS)."""
    args: syntax.ListCommand = c.args
    keyword = "LSUB" if "LSUB" in args.selection else "LIST"
    reference = decode_name(args.reference) if args.reference else ""
    patterns = [_pattern(p) for p in args.patterns]
    if keyword == "LIST" and patterns == [""] and not args.selection:
        # RFC 3501 §6.3.8: an empty pattern asks for the delimiter and the root.
        return ok("LIST completed", untagged=[b'* LIST (\\Noselect) "/" ""\r\n'])
    result = await s.call(ListMailboxes(_user(s)))
    entries = tree(result["mailboxes"])
    regexes = [pattern_regex(reference, p) for p in patterns if p]
    lines: list[bytes] = []
    for name in sorted(entries, key=_sort_key):
        if not any(r.fullmatch(name) for r in regexes):
            continue
        line = _list_line(keyword, entries[name], args, any(p.endswith("%") for p in patterns))
        if line is None:
            continue
        lines.append(line)
        entry = entries[name]
        if "STATUS" in args.returns and entry.exists:
            lines.append(_status_line(name, entry.status, args.status_items))
    return ok(f"{keyword} completed", untagged=lines)


def _pattern(wire: bytes) -> str:
    return decode_name(wire) if wire else ""


def _list_line(keyword: str, e: Entry, args: syntax.ListCommand, percent: bool) -> bytes | None:
    attrs: list[str] = []
    extra = b""
    subscribed_only = "SUBSCRIBED" in args.selection
    if subscribed_only and not e.subscribed:
        if keyword == "LSUB" and percent and e.subscribed_children:
            attrs.append("\\Noselect")  # RFC 3501 §6.3.9: a level above subscribed names
        elif "RECURSIVEMATCH" in args.selection and e.subscribed_children:
            extra = b' ("CHILDINFO" ("SUBSCRIBED"))'  # RFC 5258 §3.5
        else:
            return None
    if "SPECIAL-USE" in args.selection and not e.special_use:
        return None
    if not e.exists and "\\Noselect" not in attrs:
        attrs.append("\\Noselect")
    if keyword == "LIST":
        attrs.append("\\HasChildren" if e.children else "\\HasNoChildren")  # RFC 3348
        if e.subscribed and (subscribed_only or "SUBSCRIBED" in args.returns):
            attrs.append("\\Subscribed")  # RFC 5258 §3.4
    if e.special_use:
        attrs.append(e.special_use)  # RFC 6154 §2
    return f"* {keyword} ({' '.join(attrs)}) \"{DELIMITER}\" ".encode() + encode_name(e.name) + extra + b"\r\n"


def _status_values(mailbox: dict[str, Any], items: tuple[str, ...]) -> list[str]:
    values = {
        "MESSAGES": mailbox.get("messages", 0),
        # RFC 3501 §6.3.10: counted by the function for STATUS; for LIST-STATUS (RFC 5819,
        # one listing for every mailbox) the UIDs no session has seen as \Recent, an upper
        # bound when some of them were expunged without a SELECT (POP3).
        "RECENT": mailbox.get("recent", _unclaimed(mailbox)),
        "UIDNEXT": mailbox.get("uidnext", 1),
        "UIDVALIDITY": mailbox.get("uidvalidity", 0),
        "UNSEEN": mailbox.get("unseen", 0),
        "HIGHESTMODSEQ": mailbox.get("highestmodseq", 1),
    }
    return [f"{item} {values[item]}" for item in items]


def _unclaimed(mailbox: dict[str, Any]) -> int:
    """The UIDs no session has seen as \\Recent, at most the messages there are."""
    unclaimed = int(mailbox.get("uidnext", 1)) - int(mailbox.get("recent_uid", 1))
    return max(0, min(int(mailbox.get("messages", 0)), unclaimed))


def _status_line(name: str, mailbox: dict[str, Any], items: tuple[str, ...]) -> bytes:
    return b"* STATUS " + encode_name(name) + (" (" + " ".join(_status_values(mailbox, items)) + ")\r\n").encode()


async def cmd_status(s: Session, c: syntax.Command) -> Response:
    """RFC 3501 §6.3.10, RFC 7162 §3.1.6 HIGHESTMODSEQ (a CONDSTORE-enabling command)."""
    args: syntax.StatusCommand = c.args
    name = decode_name(args.mailbox)
    if "HIGHESTMODSEQ" in args.items:
        s.condstore = True
    result = await s.call(Status(_user(s), name, recent="RECENT" in args.items))
    return ok("STATUS completed", untagged=[_status_line(result["mailbox"]["name"], result["mailbox"], args.items)])


async def cmd_append(s: Session, c: syntax.Command) -> Response:
    """RFC 3501 §6.3.11: the message (already in S3 staging) is indexed by the ``append``
    operation; OK only once it is durable (DESIGN.md contract 2). RFC 4315 §3 APPENDUID.
    A missing mailbox is NO [TRYCREATE]."""
    args: syntax.Append = c.args
    name = decode_name(args.mailbox)
    flags = [f for f in args.flags if f.lower() != "\\recent"]
    date = int(args.date.timestamp()) if args.date is not None else 0
    result = await s.call(
        Append(_user(s), name, args.message.key, flags, date), codes={NONEXISTENT: "TRYCREATE", CLIENTBUG: CLIENTBUG}
    )
    if s.view is not None and s.view.name == name:
        await s.sync(force=True)  # RFC 3501 §6.3.11: the new message shows as EXISTS
    return ok("APPEND completed", f"APPENDUID {result['uidvalidity']} {result['uid']}")


async def cmd_namespace(s: Session, c: syntax.Command) -> Response:
    """RFC 2342 §5: one personal namespace, no other users' or shared ones."""
    return ok("NAMESPACE completed", untagged=[b'* NAMESPACE (("" "/")) NIL NIL\r\n'])


async def cmd_enable(s: Session, c: syntax.Command) -> Response:
    """RFC 5161 §3.1: ENABLED names what this command newly enabled; others are ignored."""
    args: syntax.Enable = c.args
    enabled = []
    if "CONDSTORE" in args.capabilities and not s.condstore:
        s.condstore = True  # RFC 7162 §3.1
        enabled.append("CONDSTORE")
    return ok("ENABLE completed", untagged=[("* ENABLED " + " ".join(enabled)).rstrip().encode() + b"\r\n"])


async def cmd_idle(s: Session, c: syntax.Command) -> Response:
    """RFC 2177 §3: the session loop sends ``+ idling`` and the updates until DONE."""
    return Response(idle=True)
