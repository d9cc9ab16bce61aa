"""The selected state (RFC 3501 §6.4): CHECK, CLOSE, EXPUNGE, SEARCH, FETCH, STORE, COPY
and their UID forms; UNSELECT (RFC 3691), MOVE (RFC 6851), UID EXPUNGE (RFC 4315).

Message numbers are the session's (:class:`~gateway.imap.view.MailboxView`); the
functions are told UIDs. Work on many messages is split into calls of
``uids_per_call`` UIDs, each well inside a Lambda timeout and payload.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from mailcore import search as programs
from mailcore.contracts import CopyMessages, Expunge, FetchMessages, SearchMessages, StoreFlags

from gateway.imap import syntax
from gateway.imap.fetch import Plan, Renderer
from gateway.imap.metadata import Metadata
from gateway.imap.names import decode_name
from gateway.imap.responses import (
    CANNOT,
    CLIENTBUG,
    EXPUNGEISSUED,
    NONEXISTENT,
    No,
    Response,
    compact,
    ok,
    ordered_set,
)
from gateway.imap.search import Compiler, check_charset, evaluate_locally
from gateway.imap.view import MailboxView, Message

if TYPE_CHECKING:
    from gateway.imap.session import Session

T = TypeVar("T")


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _view(s: Session) -> MailboxView:
    assert s.view is not None and s.user is not None
    return s.view


def _writable(view: MailboxView) -> None:
    if view.readonly:
        raise No("Mailbox is read-only (EXAMINE)", CANNOT)


async def cmd_check(s: Session, c: syntax.Command) -> Response:
    """RFC 3501 §6.4.1: nothing to checkpoint (every change is durable when answered);
    like NOOP, a chance for updates."""
    if s.subscription is not None:
        await s.services.watcher.fresh()
    return ok("CHECK completed")


async def cmd_close(s: Session, c: syntax.Command) -> Response:
    """RFC 3501 §6.4.2: expunge \\Deleted messages silently (not when read-only), then
    leave the selected state."""
    view = _view(s)
    if not view.readonly:
        await s.call(Expunge(s.user or "", view.name))
    s.deselect()
    return ok("CLOSE completed")


async def cmd_unselect(s: Session, c: syntax.Command) -> Response:
    """RFC 3691 §2: leave the selected state without expunging."""
    s.deselect()
    return ok("UNSELECT completed")


async def cmd_expunge(s: Session, c: syntax.Command) -> Response:
    """RFC 3501 §6.4.3 EXPUNGE, RFC 4315 §2.1 UID EXPUNGE (only the given UIDs). The
    EXPUNGE responses follow at the end of the command."""
    view = _view(s)
    _writable(view)
    uids = None
    if c.name == "UID EXPUNGE":
        args: syntax.UidExpunge = c.args
        uids = [m.uid for _, m in view.by_uid(args.sequence)]
        if not uids:
            return ok("UID EXPUNGE completed")
    result = await s.call(Expunge(s.user or "", view.name, uids))
    for uid in result.get("expunged") or []:
        view.mark_expunged(int(uid))
    return ok(f"{c.name} completed")


# -- SEARCH -----------------------------------------------------------------------------


async def cmd_search(s: Session, c: syntax.Command) -> Response:
    """RFC 3501 §6.4.4 SEARCH, RFC 4731 ESEARCH (RETURN), RFC 7162 §3.1.5 MODSEQ."""
    args: syntax.Search = c.args
    view = _view(s)
    compiler = Compiler(view, check_charset(args.charset))
    program = compiler.compile(args.key)
    programs.check(program)
    if compiler.uses_modseq:
        s.condstore = True
    needs = programs.needs(program)
    if needs.meta or needs.raw:
        last = view.uids[-1] if view.uids else 0
        if not last:
            matched: list[Message] = []
        else:
            result = await s.call(SearchMessages(s.user or "", view.name, json.dumps(program), 1, last))
            found = [view.messages.get(int(u)) for u in result.get("uids") or []]
            matched = [m for m in found if m is not None and not m.expunged]
    else:
        matched = evaluate_locally(program, view)
    uid = c.name.startswith("UID ")
    numbers = [m.uid if uid else view.seq_of(m.uid) or 0 for m in matched]
    highest = max((m.modseq for m in matched), default=0)
    if args.returns is None:
        line = "* SEARCH" + "".join(f" {n}" for n in numbers)
        if compiler.uses_modseq and numbers:
            line += f" (MODSEQ {highest})"
        return Response("OK", f"{c.name} completed", untagged=[line.encode() + b"\r\n"])
    return Response("OK", f"{c.name} completed", untagged=[_esearch(c, args.returns, numbers, highest, compiler)])


def _esearch(c: syntax.Command, returns: frozenset[str], numbers: list[int], highest: int, compiler: Compiler) -> bytes:
    """RFC 4731 §3.1: MIN, MAX and ALL only when something matched; COUNT always."""
    parts = [f'* ESEARCH (TAG "{c.tag}")']
    if c.name.startswith("UID "):
        parts.append("UID")
    if numbers and "MIN" in returns:
        parts.append(f"MIN {min(numbers)}")
    if numbers and "MAX" in returns:
        parts.append(f"MAX {max(numbers)}")
    if "COUNT" in returns:
        parts.append(f"COUNT {len(numbers)}")
    if numbers and "ALL" in returns:
        parts.append(f"ALL {compact(numbers)}")
    if compiler.uses_modseq and numbers:
        parts.append(f"MODSEQ {highest}")  # RFC 7162 §3.1.5
    return " ".join(parts).encode() + b"\r\n"


# -- FETCH ------------------------------------------------------------------------------


async def cmd_fetch(s: Session, c: syntax.Command) -> Response:
    """RFC 3501 §6.4.5 FETCH, §6.4.8 UID FETCH, RFC 7162 §3.1.4 MODSEQ / CHANGEDSINCE."""
    args: syntax.Fetch = c.args
    view = _view(s)
    uid = c.name == "UID FETCH"
    if args.changed_since is not None or any(a.name == "MODSEQ" for a in args.atts):
        s.condstore = True  # RFC 7162 §3.1: CONDSTORE-enabling
    targets = view.resolve(args.sequence, uid)
    if args.changed_since is not None:
        targets = [(seq, m) for seq, m in targets if m.modseq > args.changed_since]
    plan = Plan.of(args.atts, uid, args.changed_since is not None)
    metadata = await load_metadata(s, view, [m for _, m in targets]) if plan.needs_meta and targets else {}
    seen_now: set[int] = set()
    if plan.sets_seen and not view.readonly:
        seen_now = await _mark_seen(s, view, [m for _, m in targets if "\\Seen" not in m.flags and not m.expunged])
    renderer = Renderer(plan, s.services.blobs, metadata, s.condstore)

    def finish(response: Response) -> None:
        if renderer.missing:  # RFC 2180 §4.1.2, RFC 5530 EXPUNGEISSUED
            response.status, response.code, response.text = "NO", EXPUNGEISSUED, "Some messages were expunged"

    return Response("OK", f"{c.name} completed", stream=renderer.responses(targets, seen_now), finish=finish)


async def load_metadata(s: Session, view: MailboxView, messages: list[Message]) -> dict[str, Metadata]:
    """MIME metadata by blob hash: from the gateway cache, else one ``fetch`` call per
    ``metadata_per_call`` messages."""
    cache = s.services.metadata
    found: dict[str, Metadata] = {}
    missing: list[int] = []
    for m in messages:
        if m.sha256 in found:
            continue
        meta = cache.get(m.sha256)
        if meta is None:
            missing.append(m.uid)
        else:
            found[m.sha256] = meta
    for chunk in _chunks(missing, s.settings.metadata_per_call):
        result = await s.call(FetchMessages(s.user or "", view.name, chunk))
        for record in result.get("messages") or []:
            if isinstance(record.get("meta"), dict) and record.get("sha256"):
                found[record["sha256"]] = cache.put(record["sha256"], record["meta"])
    return found


async def _mark_seen(s: Session, view: MailboxView, messages: list[Message]) -> set[int]:
    """RFC 3501 §6.4.5: BODY[...] (not PEEK), RFC822 and RFC822.TEXT set \\Seen."""
    stored: list[dict[str, Any]] = []
    for chunk in _chunks([m.uid for m in messages], s.settings.uids_per_call):
        result = await s.call(StoreFlags(s.user or "", view.name, chunk, "+", ["\\Seen"]))
        stored += result.get("messages") or []
    return {m.uid for m in view.apply_stored(stored)}


# -- STORE ------------------------------------------------------------------------------


async def cmd_store(s: Session, c: syntax.Command) -> Response:
    """RFC 3501 §6.4.6 STORE, RFC 7162 §3.1.3 UNCHANGEDSINCE (failures in MODIFIED)."""
    args: syntax.Store = c.args
    view = _view(s)
    _writable(view)
    uid = c.name == "UID STORE"
    if args.unchanged_since is not None:
        s.condstore = True
    targets = [(seq, m) for seq, m in view.resolve(args.sequence, uid) if not m.expunged]
    stored: list[dict[str, Any]] = []
    since = -1 if args.unchanged_since is None else args.unchanged_since
    for chunk in _chunks([m.uid for _, m in targets], s.settings.uids_per_call):
        result = await s.call(
            StoreFlags(s.user or "", view.name, chunk, args.mode, list(args.flags), since), codes={CLIENTBUG: CLIENTBUG}
        )
        stored += result.get("messages") or []
    changed = {m.uid for m in view.apply_stored(stored)}
    lines = []
    for seq, m in targets:
        if m.uid not in changed:
            continue
        if not args.silent:
            lines.append(view.fetch_flags_line(seq, m, s.condstore, uid))
        elif s.condstore:
            # RFC 7162 §3.1.3: with .SILENT the new MODSEQs are still reported.
            items = (b"UID %d " % m.uid if uid else b"") + b"MODSEQ (%d)" % m.modseq
            lines.append(b"* %d FETCH (%s)\r\n" % (seq, items))
    code = ""
    if args.unchanged_since is not None:
        failed = [(m.uid if uid else seq) for seq, m in targets if m.uid not in changed]
        if failed:
            code = f"MODIFIED {compact(failed)}"
    return Response("OK", f"{c.name} completed", code, lines)


# -- COPY / MOVE ------------------------------------------------------------------------


async def cmd_copy(s: Session, c: syntax.Command) -> Response:
    """RFC 3501 §6.4.7 COPY (NO [TRYCREATE] for a missing target), RFC 4315 §3 COPYUID,
    RFC 6851 §3.1 MOVE: COPYUID in an untagged OK, then the EXPUNGE responses."""
    args: syntax.Copy = c.args
    view = _view(s)
    move = c.name.endswith("MOVE")
    if move:
        _writable(view)
    target = decode_name(args.mailbox)
    targets = view.resolve(args.sequence, c.name.startswith("UID "))
    if any(m.expunged for _, m in targets):
        raise No("Some of the messages were expunged", EXPUNGEISSUED)  # RFC 2180 §4.4.1
    pairs: list[tuple[int, int]] = []
    uidvalidity = 0
    for chunk in _chunks([m.uid for _, m in targets], s.settings.uids_per_call):
        result = await s.call(
            CopyMessages(s.user or "", view.name, chunk, target, move), codes={NONEXISTENT: "TRYCREATE"}
        )
        pairs += [(int(a), int(b)) for a, b in result.get("pairs") or []]
        uidvalidity = int(result.get("uidvalidity") or 0)
    pairs.sort()
    code = f"COPYUID {uidvalidity} {ordered_set(p[0] for p in pairs)} {ordered_set(p[1] for p in pairs)}" if pairs else ""
    if target == view.name:
        await s.sync(force=True)
    if not move:
        return ok(f"{c.name} completed", code)
    for source, _ in pairs:
        view.mark_expunged(source)
    untagged = [f"* OK [{code}] Moved\r\n".encode()] if code else []
    return ok(f"{c.name} completed", untagged=untagged)
