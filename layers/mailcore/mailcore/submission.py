"""The submit operation: a message an authenticated user submitted (RFC 6409).

The gateway's submission listeners (587 with STARTTLS, 465 with implicit TLS) stage the
bytes and call :func:`submit` once per transaction. It

1. checks that the user may use the envelope sender (RFC 6409 §6.1) and learns which
   recipient domains are ours, in one BatchGetItem (none for the user's own address and
   domains it knows already: :class:`DomainCache`);
2. completes the message: ``Date`` and ``Message-ID`` when missing (RFC 6409 §8.2,
   §8.3), any ``Return-Path`` removed (RFC 5321 §4.4: only final delivery adds one);
3. delivers to local recipients through the inbound path (:func:`mailcore.delivery.deliver`);
4. queues one record per remote domain (:mod:`mailcore.outbound`), and answers only then
   (DESIGN.md contract 2: outbound mail is accepted once it is in the queue);
5. files a copy in the sender's Sent mailbox if ``SAVE_SENT`` says so.

Cost of a small message to one remote recipient: 1 GetObject (the staged bytes; none
when they come inline), 1 BatchGetItem (none while its domain is cached), 1 SendMessage.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from mailcore import dynamo
from mailcore.accounts import DOMAINS, MAX_CACHED, Accounts, _alias_key
from mailcore.addresses import Address, parse_address
from mailcore.aws import Clients
from mailcore.blobstore import STAGING_PREFIX
from mailcore.contracts import Deliver, RelayRecord, Request, Submit
from mailcore.delivery import deliver
from mailcore.dsn import rfc5322_date
from mailcore.errors import InvalidInput, NotFound, PermissionDenied
from mailcore.mailboxes import DEFAULT_MAILBOXES
from mailcore.messages import NewMessage
from mailcore.mime import analyze
from mailcore.outbound import OutboundQueue, decode_inline, encode_inline, record_id
from mailcore.store import Store

SENT = next(name for name, use in DEFAULT_MAILBOXES.items() if use == "\\Sent")

# -- the message ---------------------------------------------------------------------

_FIELD = re.compile(rb"^([!-9;-~]+)[ \t]*:")


@dataclass(frozen=True)
class Completed:
    """The message as it leaves: bytes, its Message-ID, and what was added."""

    data: bytes
    message_id: str
    added: tuple[str, ...]


def _split_header(raw: bytes) -> tuple[list[bytes], bytes, bool]:
    """(header lines, the rest, whether the rest starts with the empty line).

    The header section ends at the first empty line; also at the first line that is
    neither a field nor a continuation (a client that sent no header section at all).
    """
    lines = raw.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line in (b"\r\n", b"\n"):
            return lines[:i], b"".join(lines[i:]), True
        if not (_FIELD.match(line) or (i > 0 and line[:1] in (b" ", b"\t"))):
            return lines[:i], b"".join(lines[i:]), False
    return lines, b"", False


def _fields(lines: list[bytes]) -> list[tuple[str, list[bytes]]]:
    """Header lines grouped into fields: (lower-case name, its lines)."""
    fields: list[tuple[str, list[bytes]]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1][1].append(line)
        else:
            match = _FIELD.match(line)
            fields.append(((match.group(1) if match else b"").decode("ascii").lower(), [line]))
    return fields


def _value(field_lines: list[bytes]) -> str:
    text = b"".join(field_lines).decode("utf-8", "replace")
    return re.sub(r"\r?\n[ \t]", " ", text.partition(":")[2]).strip()


def new_message_id(hostname: str, dedup_key: str) -> str:
    """``<token@hostname>``; stable for one dedup key, so a retried submission keeps it."""
    token = hashlib.sha256(f"message-id\0{dedup_key}".encode()).hexdigest()[:32] if dedup_key else uuid.uuid4().hex
    return f"<{token}@{hostname}>"


def complete(raw: bytes, hostname: str, dedup_key: str = "", now: float | None = None) -> Completed:
    """RFC 6409 §8: add Date (§8.2) and Message-ID (§8.3) when missing; drop Return-Path."""
    lines, rest, separated = _split_header(raw)
    fields = _fields(lines)
    # RFC 5321 §4.4: "A message-originating SMTP system SHOULD NOT send a message that
    # already contains a Return-path header field." Final delivery adds the real one.
    kept = [(name, f) for name, f in fields if name != "return-path"]
    names = {name for name, _ in kept}
    added: list[bytes] = []
    if "date" not in names:
        added.append(f"Date: {rfc5322_date(time.time() if now is None else now)}\r\n".encode())
    message_id = next((_value(f) for name, f in kept if name == "message-id"), "")
    if not message_id:
        message_id = new_message_id(hostname, dedup_key)
        added.append(f"Message-ID: {message_id}\r\n".encode())
    head = b"".join(b"".join(f) for _, f in kept)
    if head and not head.endswith(b"\n"):
        head += b"\r\n"
    if not separated:
        rest = b"\r\n" + rest  # the empty line after the header section (RFC 5322 §2.1)
    if not added and len(kept) == len(fields):
        return Completed(raw, message_id, ())
    names_added = tuple(line.split(b":", 1)[0].decode() for line in added)
    return Completed(head + b"".join(added) + rest, message_id, names_added)


# -- who may send as whom -----------------------------------------------------------


def _sender_keys(principal: Address, sender: Address | None) -> list[dict[str, str]]:
    if sender is None or sender.base == principal:
        return []  # the null reverse-path, the user's own address, or its plus-address
    candidates = [sender] if sender.base == sender else [sender, sender.base]
    return [_alias_key(c) for c in candidates]


def _owns(principal: Address, sender: Address | None, items: dict[tuple[str, str], dict[str, Any]]) -> bool:
    """RFC 6409 §6.1: the user's own address, an alias whose targets include the user, or
    a plus-address of either."""
    if sender is None or sender.base == principal:
        return True
    for key in _sender_keys(principal, sender):
        alias = items.get((key["pk"], key["sk"]))
        if alias and str(principal) in alias.get("targets", []):
            return True
    return False


# -- which domains are ours -----------------------------------------------------------


class DomainCache:
    """Whether a recipient domain is ours, per process (a function container), kept as
    :mod:`mailcore.accounts` keeps resolutions: ``RESOLVE_CACHE_SECONDS`` for ours,
    ``RESOLVE_NEGATIVE_CACHE_SECONDS`` for the rest, forgotten at once on any account
    write of the process (the resolution cache's generation). A steady flow of mail to a
    remote domain costs no lookup per message."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], tuple[float, int, bool]] = {}
        self._lock = threading.Lock()

    def known(self, accounts: Accounts, domains: list[str]) -> dict[str, bool]:
        assert accounts.cache is not None
        now, generation = accounts.cache.clock(), accounts.cache.generation
        with self._lock:
            entries = {d: self._entries.get((accounts.table, d)) for d in domains}
        return {d: e[2] for d, e in entries.items() if e is not None and e[0] > now and e[1] == generation}

    def learn(self, accounts: Accounts, found: dict[str, bool], generation: int) -> None:
        """``found`` as read in ``generation``: not kept if an account changed meanwhile."""
        cache = accounts.cache
        assert cache is not None
        with self._lock:
            if generation != cache.generation:
                return
            for domain, ours in found.items():
                ttl = cache.positive_ttl if ours else cache.negative_ttl
                if ttl <= 0:
                    continue
                while len(self._entries) >= MAX_CACHED:
                    del self._entries[next(iter(self._entries))]  # the oldest
                self._entries[(accounts.table, domain)] = (cache.clock() + ttl, generation, ours)


_domains = DomainCache()

# -- the operation ---------------------------------------------------------------------

#: Built on first use: moto (or AWS) must be in place before a client exists.
_clients = Clients()


def _dsn_list(values: list[str], count: int) -> list[str]:
    return [values[i] if i < len(values) else "" for i in range(count)]


def submit(store: Store, request: Submit, queue: OutboundQueue | None = None) -> dict[str, Any]:
    """RFC 6409: check, complete, deliver locally, queue for the rest. See the module doc."""
    principal = parse_address(request.user)
    sender = parse_address(request.sender) if request.sender else None
    if not request.recipients:
        raise InvalidInput("no recipients")
    notify = _dsn_list(request.notify, len(request.recipients))
    orcpt = _dsn_list(request.orcpt, len(request.recipients))
    # A recipient named twice gets the message once (with its first DSN parameters).
    first: dict[Address, int] = {}
    for i, text in enumerate(request.recipients):
        first.setdefault(parse_address(text), i)
    recipients = list(first)
    notify, orcpt = [notify[i] for i in first.values()], [orcpt[i] for i in first.values()]

    domains = sorted({r.domain for r in recipients})
    assert store.accounts.cache is not None
    generation = store.accounts.cache.generation
    ours = _domains.known(store.accounts, domains)
    unknown = [d for d in domains if d not in ours]
    keys = [{"pk": DOMAINS, "sk": d} for d in unknown] + _sender_keys(principal, sender)
    found = dynamo.batch_get(store.accounts.dynamodb, store.accounts.table, keys)  # none for no keys
    items = {(i["pk"], i["sk"]): i for i in found}
    if not _owns(principal, sender, items):
        # The listener answers 553 5.7.1 (RFC 6409 §6.1, RFC 3463 X.7.1).
        raise PermissionDenied(f"{principal} may not send as {sender}")
    learnt = {d: (DOMAINS, d) in items for d in unknown}
    _domains.learn(store.accounts, learnt, generation)
    local_domains = {d for d, local in {**ours, **learnt}.items() if local}

    if request.message:
        raw = decode_inline(request.message)
    elif request.staging_key:
        raw = store.blobs.read_staging(request.staging_key)
    else:
        raise InvalidInput("neither staging_key nor message")
    settings = store.settings
    completed = complete(raw, settings.mail_hostname, request.dedup_key)
    final = completed.data
    dedup = request.dedup_key or hashlib.sha256(final).hexdigest()

    local = [i for i, r in enumerate(recipients) if r.domain in local_domains]
    delivered: list[dict[str, Any]] = []
    if local:
        dsn = [(notify[i], orcpt[i]) for i in local]
        delivered = _deliver_locally(store, request, final, [recipients[i] for i in local], dsn, dedup)

    by_domain: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(recipients):
        if r.domain not in local_domains:
            by_domain[r.domain].append(i)
    sha = hashlib.sha256(final).hexdigest()
    records: list[RelayRecord] = []
    if by_domain:
        inline = len(final) <= settings.outbound_inline_limit
        if not inline:
            # The queue's reference keeps the bytes while any record needs them.
            store.blobs.add_refs(store.blobs.write(final), len(by_domain))
        now = int(time.time())
        for domain, indexes in by_domain.items():
            records.append(
                RelayRecord(
                    id=record_id(dedup, domain),
                    domain=domain,
                    sender=str(sender) if sender else "",
                    recipients=[str(recipients[i]) for i in indexes],
                    sha256=sha,
                    size=len(final),
                    message=encode_inline(final) if inline else "",
                    message_id=completed.message_id,
                    user=str(principal),
                    first_attempt=now,
                    ret=request.ret,
                    envid=request.envid,
                    notify=[notify[i] for i in indexes],
                    orcpt=[orcpt[i] for i in indexes],
                )
            )
        (queue or OutboundQueue(_clients.sqs, settings.outbound_queue_url)).send(records)

    sent_uid = _save_sent(store, principal, final, dedup) if settings.save_sent else None
    return {
        "message_id": completed.message_id,
        "added": list(completed.added),
        "sha256": sha,
        "size": len(final),
        "delivered": delivered,
        "queued": [{"id": r.id, "domain": r.domain, "recipients": r.recipients} for r in records],
        "sent_uid": sent_uid,
    }


def _deliver_locally(
    store: Store, request: Submit, final: bytes, recipients: list[Address], dsn: list[tuple[str, str]], dedup: str
) -> list[dict[str, Any]]:
    """The inbound path (mailcore.delivery), with the Return-Path final delivery adds (RFC
    5321 §4.4) and each recipient's NOTIFY and ORCPT (``dsn``, RFC 3461 §4)."""
    staged = f"{STAGING_PREFIX}submit-{uuid.uuid4().hex}"
    copy = f"Return-Path: <{request.sender}>\r\n".encode() + final
    store.blobs.s3.put_object(Bucket=store.blobs.bucket, Key=staged, Body=copy, ContentType="message/rfc822")
    try:
        result = deliver(
            store,
            Deliver(
                staging_key=staged,
                sender=request.sender,
                recipients=[str(r) for r in recipients],
                dedup_key=f"submit:{dedup}",
                ret=request.ret,
                envid=request.envid,
                notify=[n for n, _ in dsn],
                orcpt=[o for _, o in dsn],
            ),
        )
    except NotFound:
        # The listener checked every RCPT with the ingest function's resolve; a user
        # removed since then receives nothing, like any unknown local recipient.
        return []
    return list(result["deliveries"])


def _save_sent(store: Store, principal: Address, final: bytes, dedup: str) -> int | None:
    """A copy in the user's Sent mailbox (\\Seen): SAVE_SENT, for clients that do not APPEND it."""
    written = store.blobs.write(final)
    message = NewMessage(written.sha256, len(final), analyze(final).to_item(), ["\\Seen"], int(time.time()))
    uids = store.messages.append(str(principal), SENT, [message], dedup_key=f"sent:{dedup}", written=[written])
    return uids[0] if uids else None


OPERATIONS: dict[type[Request], Any] = {Submit: submit}
