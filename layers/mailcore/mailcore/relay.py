"""The relay: OutboundQueue records to the world's MXs, with retries and bounces.

For each record (:class:`mailcore.contracts.RelayRecord`) the relay

1. skips it if its marker says it was done already: SQS delivers a record at least
   once, and a redelivered record must not send twice (DESIGN.md contract 3);
2. waits, if the record's time has not come (SQS delays a record 15 minutes at most:
   a longer wait is a chain of delayed re-enqueues, :data:`mailcore.outbound.MAX_DELAY`);
3. looks up the MX hosts (:mod:`mailcore.mx`, RFC 5321 §5.1), signs the message with
   the sender domain's DKIM key (:mod:`mailcore.dkim`) and delivers it
   (:mod:`mailcore.smtpclient`), with a result per recipient; the records of one batch
   for the same server share a connection (RFC 5321 §3.3);
4. reports to the sender (an RFC 3464 report, :mod:`mailcore.dsn`; never for a message
   with the null reverse-path) the recipients that failed for good or whose retries ran
   past the lifetime (RFC 5321 §4.5.4.1: give up after 4-5 days), those handed to a server
   without DSN when NOTIFY asked for SUCCESS ("relayed", RFC 3461 §6.2.2.2), and once,
   after ``RELAY_DELAY_WARNING_SECONDS``, those still deferred ("delayed", §4.1), in one
   report per attempt, as NOTIFY asks;
5. puts the recipients that failed for now back on the queue, after an exponential
   backoff (``RELAY_RETRY_MIN_SECONDS`` doubling up to ``RELAY_RETRY_MAX_SECONDS``);
6. writes the record's marker, and publishes ``MessageSent``, ``DeliveryDelayed`` and
   ``MessageBounced`` events (one PutEvents per 10 events of a batch).

The marker (``MailboxesTable``, ``pk=RELAY#<id>``, ``sk=HOP#<hop>``, expiring after the
queue's retention) is read for the whole batch first (one BatchGetItem) and written once
a record is done. When a delivery attempt leaves follow-up work (a bounce, a retry), a
marker with the attempt's outcome is written first, so a redelivery redoes the
follow-ups, not the delivery.

A record's DONE marker is written as soon as the record is sent, but in a batch the next
record's delivery does not wait for it (:class:`Closings`, at most
:data:`CLOSINGS_IN_FLIGHT` at once): a batch is answered only when every marker is written,
and a record whose marker could not be written is reported failed, as if the write had
failed before the next delivery. A crash between a send and its marker resends the record,
as it always could; with closings in flight, that is up to :data:`CLOSINGS_IN_FLIGHT` records.

Cost of a small message delivered at the first attempt, with the DKIM key cached: 1
BatchGetItem and 1 PutEvents per batch, 1 PutItem per record.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from mailcore import dkim, dynamo
from mailcore.aws import Clients
from mailcore.contracts import RELAY_REQUESTS, ContractError, RelayRecord, parse_request
from mailcore.delivery import deliver_report
from mailcore.dsn import RecipientReport, asked, build_report
from mailcore.mx import MxResolver, make_resolver
from mailcore.outbound import OutboundQueue, decode_inline
from mailcore.settings import Settings
from mailcore.smtpclient import Attempt, ClientConfig, Envelope, RecipientResult, Sessions
from mailcore.smtpclient import deliver as smtp_deliver
from mailcore.store import Store

log = logging.getLogger(__name__)

#: Longer than the queue's message retention (14 days): a marker outlives any redelivery.
MARKER_SECONDS = 15 * 24 * 3600
DONE = "done"
ATTEMPTED = "attempted"
#: Kept back from the Lambda's remaining time; a record needs at least MIN_RECORD_SECONDS.
SAFETY_SECONDS = 5
MIN_RECORD_SECONDS = 10
#: RFC 3463 X.4.7: delivery time expired.
EXPIRED = "4.4.7"
#: Records of a batch whose closing writes (DONE marker, blob release) may run at once,
#: beside the next record's delivery.
CLOSINGS_IN_FLIGHT = 4

MarkerKey = tuple[str, str]


def marker_key(record: RelayRecord) -> dict[str, str]:
    return {"pk": f"RELAY#{record.id}", "sk": f"HOP#{record.hop}"}


def marker_id(record: RelayRecord) -> MarkerKey:
    key = marker_key(record)
    return (key["pk"], key["sk"])


def backoff(attempts: int, first: int, last: int) -> int:
    """Seconds to wait after the ``attempts``-th attempt: ``first``, doubled each time, at most ``last``."""
    return int(min(last, first * 2 ** max(0, attempts - 1)))


@dataclass(frozen=True)
class Notice:
    """One recipient's line in a report to the sender."""

    result: RecipientResult
    action: str  # failed, delayed, relayed (RFC 3464 §2.3.3)
    status: str
    will_retry_until: int = 0


@dataclass
class Relay:
    store: Store
    queue: OutboundQueue
    keys: dkim.DkimKeys
    mx: MxResolver
    settings: Settings
    clock: Callable[[], float] = time.time
    #: Markers read or written by this invocation: a record that SQS hands out twice in
    #: one batch (or a retried submission's twin) is seen as done the second time.
    known: dict[MarkerKey, dict[str, Any]] = field(default_factory=dict)
    #: Connections to MXs kept between the records of one batch (RFC 5321 §3.3), closed
    #: by :class:`RelayService` at its end; None: a connection per delivery.
    sessions: Sessions | None = None
    #: Where records' closing writes run beside the next delivery (:class:`Closings`,
    #: settled by :class:`RelayBatch`); None: before :meth:`process` returns.
    closings: Closings | None = None

    @classmethod
    def build(cls, clients: Clients, settings: Settings) -> Relay:
        return cls(
            store=Store.build(settings, clients),
            queue=OutboundQueue(clients.sqs, settings.outbound_queue_url),
            keys=dkim.DkimKeys(clients.get("ssm"), settings.dkim_parameter_path),
            mx=MxResolver(make_resolver(settings.relay_dns_server)),
            settings=settings,
        )

    # -- markers -------------------------------------------------------------------

    def markers(self, records: list[RelayRecord]) -> dict[MarkerKey, dict[str, Any]]:
        """The markers of ``records``: one BatchGetItem per 100."""
        if not records:
            return {}
        keys = [marker_key(r) for r in records]
        unique = list({(k["pk"], k["sk"]): k for k in keys}.values())
        found = dynamo.batch_get(self.store.mailboxes.dynamodb, self.store.mailboxes.table, unique)
        markers = {(item["pk"], item["sk"]): item for item in found}
        self.known.update(markers)
        return markers

    def mark(self, record: RelayRecord, state: str, attempt: Attempt | None = None) -> None:
        item: dict[str, Any] = {
            **marker_key(record),
            "state": state,
            "expires_at": int(self.clock()) + MARKER_SECONDS,
        }
        if attempt is not None:
            item["outcome"] = json.dumps(
                {
                    "server": attempt.server,
                    "tls": attempt.tls,
                    "dsn": attempt.dsn,
                    "results": [asdict(r) for r in attempt.results],
                }
            )
        self.store.mailboxes.dynamodb.put_item(TableName=self.store.mailboxes.table, Item=dynamo.serialize(item))
        self.known[(item["pk"], item["sk"])] = item

    def close(self, record: RelayRecord, release: bool = False) -> None:
        """The record is done: its DONE marker, then (once that is written) the queue's
        reference on its blob (:mod:`mailcore.outbound`). Later records of the batch see it
        done at once; the writes run in :attr:`closings` if there are any."""
        key = marker_id(record)
        self.known[key] = {"pk": key[0], "sk": key[1], "state": DONE}

        def writes() -> None:
            self.mark(record, DONE)
            if release:
                self.store.blobs.release(record.sha256)

        if self.closings is None:
            writes()
        else:
            self.closings.run(key, writes)

    # -- one record ------------------------------------------------------------------

    def process(
        self, record: RelayRecord, marker: dict[str, Any] | None, deadline: float, events: list[tuple[str, dict[str, Any]]]
    ) -> None:
        if marker is not None and marker.get("state") == DONE:
            log.info("relay %s hop %d: done before, not again", record.id, record.hop)
            return
        now = self.clock()
        if marker is None and record.not_before > now:
            # Not yet: another hop on the queue, as long as SQS lets it wait.
            self.queue.send([replace(record, hop=record.hop + 1)], delay=int(record.not_before - now) + 1)
            self.close(record)
            return
        if marker is None and deadline - time.monotonic() < MIN_RECORD_SECONDS:
            # This invocation is nearly out of time: leave the record to another one.
            self.queue.send([replace(record, hop=record.hop + 1)])
            self.close(record)
            return
        raw = decode_inline(record.message) if record.message else self.store.blobs.get(record.sha256)
        if marker is None:
            attempt = self.attempt(record, raw, deadline)
        else:  # a redelivery after the attempt: redo only what followed it
            outcome = json.loads(marker["outcome"])
            results = [RecipientResult(**r) for r in outcome["results"]]
            attempt = Attempt(results, outcome["server"], outcome["tls"], outcome.get("dsn", False))
        self.follow_up(record, raw, attempt, first_time=marker is None, events=events)

    def attempt(self, record: RelayRecord, raw: bytes, deadline: float) -> Attempt:
        mx = self.mx.lookup(record.domain)
        if not mx.ok:
            log.info("relay %s: %s", record.id, mx.error)
            return Attempt([RecipientResult(r, mx.status, mx.error, "") for r in record.recipients])
        envelope = Envelope(
            sender=record.sender,
            recipients=record.recipients,
            data=self.sign(record, raw),
            ret=record.ret,
            envid=record.envid,
            notify=record.notify,
            orcpt=record.orcpt,
        )
        config = ClientConfig(
            hostname=self.settings.mail_hostname,
            port=self.settings.relay_smtp_port,
            deadline=deadline,
        )
        return smtp_deliver(envelope, mx, self.mx, config, self.sessions)

    def sign(self, record: RelayRecord, raw: bytes) -> bytes:
        """DKIM with the key of the envelope sender's domain, which submission checked the
        user owns (RFC 6409 §6.1); a domain without a key sends unsigned."""
        domain = record.sender.rpartition("@")[2] or self.settings.mail_hostname
        key = self.keys.get(domain)
        if key is None:
            return raw
        try:
            return dkim.sign(raw, key)
        except Exception as error:  # a broken key must not stop the mail
            log.error("relay %s: DKIM signing for %s failed: %s", record.id, domain, type(error).__name__)
            return raw

    def follow_up(
        self,
        record: RelayRecord,
        raw: bytes,
        attempt: Attempt,
        first_time: bool,
        events: list[tuple[str, dict[str, Any]]],
    ) -> None:
        now = int(self.clock())
        attempts = record.attempts + 1  # this attempt, made now or before a redelivery
        delivered = [r for r in attempt.results if r.delivered]
        failed = [r for r in attempt.results if r.permanent]
        deferred = [r for r in attempt.results if r.temporary]
        expires = record.first_attempt + self.settings.relay_lifetime
        expired: list[RecipientResult] = []
        if deferred and now >= expires:
            expired, deferred = deferred, []
        warning = self.settings.relay_delay_warning
        warn = bool(deferred) and not record.warned and 0 < warning <= now - (record.first_attempt or now)
        notices = [
            *[Notice(r, "failed", r.status) for r in failed],
            *[Notice(r, "failed", EXPIRED) for r in expired],
            # RFC 3461 §6.2.2.2: past a server without DSN nobody reports success.
            *[Notice(r, "relayed", r.status) for r in delivered if not attempt.dsn],
            *[Notice(r, "delayed", r.status, will_retry_until=expires) for r in deferred if warn],
        ]
        notices = [n for n in notices if record.sender and asked(record.recipients, record.notify, n.result.recipient, n.action)]
        if (failed or expired or deferred or notices) and first_time:
            self.mark(record, ATTEMPTED, attempt)
        base = {"id": record.id, "domain": record.domain, "sender": record.sender, "message_id": record.message_id}
        reported = self.report(record, raw, notices, now) if notices else False
        if failed or expired:
            events.append(
                (
                    "MessageBounced",
                    {
                        **base,
                        "recipients": [r.recipient for r in failed + expired],
                        "statuses": {
                            **{r.recipient: r.status for r in failed},
                            **{r.recipient: EXPIRED for r in expired},
                        },
                        "attempts": attempts,
                        "report": reported and any(n.action == "failed" for n in notices),
                    },
                )
            )
        if deferred:
            next_at = min(now + backoff(attempts, self.settings.relay_retry_min, self.settings.relay_retry_max), expires)
            index = {r: i for i, r in enumerate(record.recipients)}
            keep = [index[r.recipient] for r in deferred]
            self.queue.send(
                [
                    replace(
                        record,
                        recipients=[record.recipients[i] for i in keep],
                        notify=[record.notify[i] for i in keep if i < len(record.notify)],
                        orcpt=[record.orcpt[i] for i in keep if i < len(record.orcpt)],
                        attempts=attempts,
                        hop=record.hop + 1,
                        not_before=next_at,
                        warned=record.warned or warn,
                    )
                ],
                delay=next_at - now,
            )
            events.append(
                (
                    "DeliveryDelayed",
                    {
                        **base,
                        "recipients": [r.recipient for r in deferred],
                        "status": deferred[0].status,
                        "reason": deferred[0].diagnostic,
                        "attempts": attempts,
                        "next_attempt": next_at,
                        "expires": expires,
                    },
                )
            )
        self.close(record, release=not deferred and not record.message)
        if delivered:
            events.append(
                (
                    "MessageSent",
                    {
                        **base,
                        "recipients": [r.recipient for r in delivered],
                        "server": attempt.server,
                        "tls": attempt.tls,
                        "attempts": attempts,
                        "sha256": record.sha256,
                        "size": record.size,
                    },
                )
            )
        log.info(
            "relay %s hop %d to %s: %d sent, %d bounced, %d deferred",
            record.id,
            record.hop,
            record.domain,
            len(delivered),
            len(failed) + len(expired),
            len(deferred),
        )

    # -- reports to the sender ------------------------------------------------------------

    def report(self, record: RelayRecord, raw: bytes, notices: list[Notice], now: int) -> bool:
        """An RFC 3464 report to the sender; True if one was made. Never for a bounce."""
        if not record.sender:
            return False  # RFC 3464 §2 / RFC 5321 §4.5.5: no report on a report
        index = {r: i for i, r in enumerate(record.recipients)}
        reports = []
        for notice in notices:
            result, i = notice.result, index.get(notice.result.recipient, -1)
            reports.append(
                RecipientReport(
                    recipient=result.recipient,
                    action=notice.action,
                    status=notice.status,
                    diagnostic=result.diagnostic,
                    diagnostic_type=result.diagnostic_type,
                    remote_mta=result.remote_mta,
                    original_recipient=record.orcpt[i] if 0 <= i < len(record.orcpt) else "",
                    last_attempt=now,
                    will_retry_until=notice.will_retry_until,
                )
            )
        report = build_report(
            reporting_mta=self.settings.mail_hostname,
            sender=record.sender,
            reports=reports,
            original=raw,
            arrival=record.first_attempt or now,
            envid=record.envid,
            ret=record.ret,
            now=now,
        )
        deliver_report(self.store, record.sender, report, f"dsn:{record.id}:{record.hop}", self.queue)
        return True


# -- one batch -------------------------------------------------------------------------


class Closings:
    """Records' closing writes, run in ``pool`` while the batch goes on: at most
    :data:`CLOSINGS_IN_FLIGHT` unfinished at once (a further one waits for a place)."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self.pool = pool
        self.pending: list[tuple[MarkerKey, Future[None]]] = []

    def run(self, key: MarkerKey, writes: Callable[[], None]) -> None:
        while True:
            unfinished = [f for _, f in self.pending if not f.done()]
            if len(unfinished) < CLOSINGS_IN_FLIGHT:
                break
            wait(unfinished, return_when=FIRST_COMPLETED)
        # The caller's context goes along: request accounting and BACKGROUND are context variables.
        self.pending.append((key, self.pool.submit(contextvars.copy_context().run, writes)))

    def settle(self) -> set[MarkerKey]:
        """Waits for every write; the records whose writes failed."""
        failed = set()
        for key, future in self.pending:
            error = future.exception()
            if error is not None:
                log.error("relay %s %s: closing writes failed: %r", key[0], key[1], error)
                failed.add(key)
        self.pending.clear()
        return failed


@dataclass
class RelayBatch:
    """One invocation's records: markers read up front, events published at the end."""

    relay: Relay
    deadline: float
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    #: Records parsed by :meth:`prefetch`, by body: each is parsed (and checked) once.
    parsed: dict[str, RelayRecord] = field(default_factory=dict)
    #: SQS message ids by marker: the queue records a failed closing write fails.
    message_ids: dict[MarkerKey, list[str]] = field(default_factory=dict)

    def prefetch(self, event: dict[str, Any]) -> None:
        for raw in event.get("Records") or []:
            body = raw.get("body", "")
            try:
                self.parsed[body] = parse_record(body)
            except ContractError:
                continue  # handle() fails it
        self.relay.markers(list(self.parsed.values()))

    def handle(self, record: Any) -> None:
        """The BatchProcessor's record handler: raise, and the record returns to the queue."""
        body = record.body if hasattr(record, "body") else record["body"]
        parsed = self.parsed.get(body) or parse_record(body)
        key = marker_id(parsed)
        message_id = record.message_id if hasattr(record, "message_id") else record["messageId"]
        self.message_ids.setdefault(key, []).append(message_id)
        self.relay.process(parsed, self.relay.known.get(key), self.deadline, self.events)

    def settle(self, response: Mapping[str, Any]) -> dict[str, Any]:
        """``response`` (``batchItemFailures``) once every closing write is done, with the
        records whose writes failed added: SQS gives those again."""
        closings = self.relay.closings
        failed = closings.settle() if closings is not None else set()
        items = list(response.get("batchItemFailures", []))
        reported = {item["itemIdentifier"] for item in items}
        for key in sorted(failed):
            items += [{"itemIdentifier": m} for m in self.message_ids.get(key, []) if m not in reported]
        return {**response, "batchItemFailures": items}

    def publish(self) -> None:
        """Events of the batch, one PutEvents per 10. The mail is sent by now: a failure
        here is logged, never a reason to send again."""
        by_type: dict[str, list[dict[str, Any]]] = {}
        for detail_type, detail in self.events:
            by_type.setdefault(detail_type, []).append(detail)
        for detail_type, details in by_type.items():
            try:
                self.relay.store.events.publish(detail_type, details)
            except Exception:
                log.exception("relay: %d %s events not published", len(details), detail_type)
        self.events.clear()


def parse_record(body: str) -> RelayRecord:
    try:
        event = json.loads(body)
    except ValueError as error:
        raise ContractError(f"queue record is not JSON: {error}") from None
    record = parse_request(event, RELAY_REQUESTS)
    assert isinstance(record, RelayRecord)
    return record


class RelayService:
    """What a relay container keeps: its AWS clients (and, in :mod:`mailcore.dkim`, keys).
    Settings are read per invocation."""

    def __init__(self) -> None:
        self.clients = Clients()
        self.pool = ThreadPoolExecutor(CLOSINGS_IN_FLIGHT, thread_name_prefix="relay-closing")

    @contextmanager
    def batch(self, event: dict[str, Any], context: Any) -> Iterator[RelayBatch]:
        remaining = context.get_remaining_time_in_millis() / 1000 if context is not None else 300
        relay = Relay.build(self.clients, Settings.from_env())
        relay.sessions = Sessions()
        relay.closings = Closings(self.pool)
        batch = RelayBatch(relay, deadline=time.monotonic() + remaining - SAFETY_SECONDS)
        batch.prefetch(event)
        try:
            yield batch
        finally:
            relay.closings.settle()  # nothing is left running between invocations
            relay.sessions.close()
            batch.publish()
