"""Relay benchmark: messages/s from submission to the remote MX, and what each costs, as JSON.

The path of every message, as in the cloud:

    mail clients --(587: STARTTLS + AUTH PLAIN, smtplib)--> gateway --> SubmitFunction
        --> OutboundQueue (SQS) --> RelayFunction --(SMTP, STARTTLS)--> the domain's MX

Layout (two cores are shared by all of it, so each part that runs in its own place in the
cloud runs in a process of its own here):

* moto in a child process, with template.yaml's resources and devstack/moto_tuning.py
  (``--stock-moto``: without those load fixes);
* this process: the gateway's submission listener (its own event-loop thread) with the
  Auth, Ingest and Submit functions in-process (``InProcessTransport``), as ``make run``
  has them;
* ``--relay-workers`` child processes, each Lambda's SQS event source mapping for one
  concurrent execution of the RelayFunction: receive up to 10 records, invoke the
  handler, delete the records it did not report as failed with one DeleteMessageBatch;
* the loopback world in a child process: a DNS server (tests/dnsserver.py) giving the
  remote domains an MX on 127.0.0.21, and there an SMTP server (aiosmtpd, STARTTLS) that
  notes the arrival time of every message;
* the mail clients in a child process: ``--clients`` threads, each a stdlib smtplib
  session (STARTTLS, AUTH PLAIN) sending ``--per-session`` messages of ``--size`` octets
  (no Date, no Message-ID: the submission adds them, RFC 6409 §8), one remote recipient
  each, then QUIT and a new session.

Reported: messages/s end to end (first submission to last arrival at the MX), the
submission's own rate and latency, end-to-end latency, AWS requests per message (every
request of the gateway and of the functions, mailcore.accounting; the event source's
SQS requests apart, as the cloud bills them), function invocations per message (Lambda
Invoke requests in the cloud), and CPU per message by process.

A last phase runs the same clients against a second submission listener whose functions
answer at once (``--gateway-only``): what the listener itself carries.

Usage: ``.venv/bin/python bench/relay_bench.py [--messages 2000] [--clients 8]
[--per-session 25] [--size 4096] [--relay-workers 2] [--gateway-only 2000] [--stock-moto]
[--dkim] [--profile DIR]``. ``--dkim`` gives the users' domain a DKIM key, so the relay
signs every message (RSA-2048 in dkimpy's pure Python). ``--profile`` writes cProfile files
of the relay workers; for moto and the gateway process (threads), attach ``py-spy record
-p PID`` while a run is on.

Also reported (``cpu_budget``): the CPU per message the target allows on this machine, what
moto costs per request (and for its cheapest request), and the password checks' share
(argon2id, once per session).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import secrets
import smtplib
import ssl
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The loopback world of the tests (tests/dnsserver.py, tests/loopback.py); bench/ is on
# the path already (the script's directory), for smtp_bench and _moto_tuning.
sys.path.insert(1, str(ROOT))

from smtp_bench import CountingTransport, cpu_seconds, machine, moto_process, percentile  # noqa: E402

PASSWORD = "bench password"
MX_ADDRESS = "127.0.0.21"
TARGET_MESSAGES_PER_SECOND = 100
TARGET_REQUESTS_PER_MESSAGE = 6

# -- the loopback world (a child process) ----------------------------------------------------


def world_process(domains: list[str], ready: Any, commands: Any) -> None:
    """DNS for ``domains`` (MX -> 127.0.0.21) and the MX itself; answers ``commands``:
    "count" -> messages so far, "report" -> {tag: arrival time}, None -> stop."""
    from aiosmtpd.controller import Controller

    from tests.dnsserver import DnsServer
    from tests.loopback import free_port, tls_context

    arrivals: dict[str, tuple[float, bool]] = {}  # tag -> (arrival time, over TLS)
    lock = threading.Lock()

    class Mx:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            data = envelope.original_content or b""
            start = data.find(b"Subject: bench ")
            tag = data[start + 15 : data.find(b"\r\n", start)].decode() if start >= 0 else ""
            with lock:
                arrivals[tag] = (time.time(), session.ssl is not None)
            return "250 2.0.0 OK queued"

    dns = DnsServer().start()
    for domain in domains:
        dns.zone.add(domain, "MX", f"10 mx.{domain}.")
        dns.zone.add(f"mx.{domain}", "A", MX_ADDRESS)
    port = free_port(MX_ADDRESS)
    context = tls_context(Path(os.environ.get("TMPDIR", "/tmp")) / f"relay-bench-mx-{os.getpid()}")
    controller = Controller(Mx(), hostname=MX_ADDRESS, port=port, server_hostname="mx.bench.test", tls_context=context)
    controller.start()
    ready.put((dns.address, port))
    while True:
        command = commands.recv()
        if command is None:
            break
        with lock:
            if command == "count":
                commands.send(len(arrivals))
            else:
                commands.send(dict(arrivals))
    controller.stop()
    dns.stop()


# -- the RelayFunction and its event source (child processes) -----------------------------------


class EventSource:
    """Lambda's SQS event source mapping for one concurrent execution: receive up to 10
    records, invoke, delete those not reported failed with one DeleteMessageBatch (as the
    cloud's does; devstack's SqsPoller deletes one by one). Counts its own SQS requests."""

    def __init__(self, queue_url: str, invoke: Any) -> None:
        import boto3

        from devstack.eventsource import SqsPoller

        self.poller = SqsPoller(boto3.client("sqs"), queue_url, invoke)  # not a mailcore client: not counted
        self.requests: Counter[str] = Counter()
        self.stats = {"batches": 0, "records": 0, "failed": 0}

    def reset(self) -> None:
        self.requests.clear()
        self.stats.update(batches=0, records=0, failed=0)

    def step(self) -> None:
        from devstack.eventsource import sqs_event

        self.requests["sqs.ReceiveMessage"] += 1
        messages = self.poller.receive(wait_seconds=1)
        if not messages:
            return
        result = self.poller.invoke(sqs_event(messages, self.poller.arn))
        failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            self.requests["sqs.DeleteMessageBatch"] += 1
            self.poller.sqs.delete_message_batch(
                QueueUrl=self.poller.url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
        self.stats["batches"] += 1
        self.stats["records"] += len(messages)
        self.stats["failed"] += len(failed)

    def run(self, stop: threading.Event, profile: str = "") -> None:
        if profile:
            import cProfile

            with cProfile.Profile() as profiler:
                self.run(stop)
            profiler.dump_stats(profile)
            return
        while not stop.is_set():
            try:
                self.step()
            except Exception:
                logging.exception("relay batch failed")
                time.sleep(0.5)


def relay_process(
    specs: Any,
    environment: dict[str, str],
    queue_url: str,
    commands: Any,
    profile: str = "",
) -> None:
    """One concurrent execution of the RelayFunction, fed by its :class:`EventSource`.
    Answers ``commands``: "reset", "report", None (stop)."""
    os.environ.update(environment)
    logging.basicConfig(level=logging.WARNING)
    sys.stdout = sys.stderr  # Powertools prints EMF metrics to stdout
    from mailcore.accounting import RequestCounter
    from mailcore.aws import add_request_observer

    from gateway.functions import InProcessTransport

    transport = InProcessTransport(specs)
    counter = RequestCounter()
    add_request_observer(counter)
    source = EventSource(queue_url, lambda e: transport.invoke("RelayFunction", e))
    stop = threading.Event()
    thread = threading.Thread(target=source.run, args=(stop, profile), daemon=True)
    thread.start()
    for command in iter(commands.recv, None):
        if command == "reset":
            counter.reset()
            source.reset()
            commands.send(cpu_seconds())
        else:
            report = {"aws": counter.snapshot(), "event_source": dict(source.requests), **source.stats}
            commands.send({**report, "cpu_seconds": cpu_seconds()})
    stop.set()
    thread.join(timeout=10)


# -- the mail clients (a child process) -----------------------------------------------------------


def make_message(sender: str, recipient: str, tag: str, size: int) -> bytes:
    """About ``size`` octets of text as a mail client writes it: no Date, no Message-ID."""
    header = f"From: Bench <{sender}>\r\nTo: <{recipient}>\r\nSubject: bench {tag}\r\nMIME-Version: 1.0\r\n"
    header += "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    line = b"The quick brown fox jumps over the lazy dog; a line of a relay benchmark body.\r\n"
    body = line * max(0, (size - len(header)) // len(line))
    return header.encode() + body


def clients_process(
    address: tuple[str, int], users: list[str], jobs: list[tuple[str, str]], per_session: int, size: int,
    results: Any, go: Any,
) -> None:  # fmt: skip
    """``len(users)`` threads, each a user's smtplib sessions: STARTTLS, AUTH, then
    ``per_session`` messages; a job is (recipient, tag)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    lock = threading.Lock()
    position = {"next": 0}
    sent: dict[str, float] = {}
    latencies: list[float] = []
    errors: list[str] = []
    sessions = {"count": 0}

    def take() -> tuple[str, str] | None:
        with lock:
            if position["next"] >= len(jobs):
                return None
            job = jobs[position["next"]]
            position["next"] += 1
            return job

    def client(user: str) -> None:
        job = take()
        while job is not None:
            try:
                with smtplib.SMTP(*address, local_hostname="client.bench", timeout=60) as smtp:
                    smtp.starttls(context=context)
                    smtp.login(user, PASSWORD)
                    with lock:
                        sessions["count"] += 1
                    for _ in range(per_session):
                        if job is None:
                            break
                        recipient, tag = job
                        message = make_message(user, recipient, tag, size)
                        started = time.time()
                        smtp.sendmail(user, [recipient], message)
                        done = time.time()
                        with lock:
                            sent[tag] = done
                            latencies.append(done - started)
                        job = take()
            except (smtplib.SMTPException, OSError) as error:
                with lock:
                    errors.append(repr(error)[:200])
                job = take()

    go.wait()
    started = time.time()
    threads = [threading.Thread(target=client, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put(
        {"started": started, "finished": time.time(), "sent": sent, "latencies": latencies, "errors": errors,
         "sessions": sessions["count"]}
    )  # fmt: skip


# -- the run --------------------------------------------------------------------------------------------


def start(args: argparse.Namespace, domains: list[str]) -> dict[str, Any]:
    """moto, the stack's resources, the loopback world, the gateway and the relay workers."""
    from mailcore.settings import Settings
    from mailcore.store import Store

    from devstack.stack import LocalStack
    from gateway.config import GatewayConfig
    from gateway.functions import FunctionClient, InProcessTransport
    from gateway.server import Gateway

    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    moto = ctx.Process(target=moto_process, args=(ports, not args.stock_moto), daemon=True, name="moto")
    moto.start()
    host, port = ports.get(timeout=60)
    local = LocalStack(port=0)
    info = local._provision(f"http://{host}:{port}")  # the devstack's own provisioning
    ready, (world_end, world_child) = ctx.Queue(), ctx.Pipe()
    world = ctx.Process(target=world_process, args=(domains, ready, world_child), daemon=True, name="world")
    world.start()
    dns_address, mx_port = ready.get(timeout=60)
    relay_env = {
        "RELAY_DNS_SERVER": dns_address,
        "RELAY_SMTP_PORT": str(mx_port),
        "RELAY_RETRY_MIN_SECONDS": "1",
        "RELAY_RETRY_MAX_SECONDS": "1",
    }
    # Before the in-process transport applies template.yaml's environment (setdefault).
    os.environ.update({**info.process_environment, **relay_env})
    environment = {**info.process_environment, **relay_env}
    store = Store.build(Settings.from_env(info.environment))
    transport = CountingTransport(InProcessTransport(info.functions))
    config = GatewayConfig(ports={"submission": 0}, hostname="bench.local", mail_bucket=info.resources["MailBucket"])
    gateway = Gateway(config, FunctionClient(transport), tls_dir=ROOT / ".local" / "bench-tls")
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="gateway", daemon=True).start()
    asyncio.run_coroutine_threadsafe(gateway.start(), loop).result(timeout=30)
    relays = []
    for n in range(args.relay_workers):
        end, child = ctx.Pipe()
        process = ctx.Process(
            target=relay_process,
            args=(
                info.functions,
                environment,
                info.resources["OutboundQueue"],
                child,
                f"{args.profile}/relay-{n}.prof" if args.profile else "",
            ),
            daemon=True,
            name=f"relay-{n}",
        )
        process.start()
        relays.append((process, end))
    return {
        "moto": moto, "store": store, "transport": transport, "gateway": gateway, "loop": loop,
        "world": (world, world_end), "relays": relays,
    }  # fmt: skip


def ask(end: Any, command: str) -> Any:
    end.send(command)
    return end.recv()


def run_phase(
    stack: dict[str, Any], users: list[str], recipients: list[str], count: int, args: argparse.Namespace
) -> dict[str, Any]:
    from mailcore.accounting import count_requests

    ctx = multiprocessing.get_context("spawn")
    world, world_end = stack["world"]
    base = ask(world_end, "count")
    run = secrets.token_hex(3)
    jobs = [(recipients[n % len(recipients)], f"{run}-{n}") for n in range(count)]
    results, go = ctx.Queue(), ctx.Event()
    address = tuple(stack["gateway"].listening["submission"])
    clients = ctx.Process(
        target=clients_process, args=(address, users, jobs, args.per_session, args.size, results, go), name="clients"
    )
    clients.start()
    assert clients.pid is not None
    time.sleep(1.5)  # the child imports and builds its jobs
    relay_cpu_before = [ask(end, "reset") for _, end in stack["relays"]]
    stack["transport"].take()
    moto_pid = stack["moto"].pid
    cpu_before = (cpu_seconds(), cpu_seconds(moto_pid), cpu_seconds(clients.pid), cpu_seconds(world.pid))
    load_before = os.getloadavg()[0]
    with count_requests() as requests, Argon2Counter() as argon2:
        go.set()
        outcome = results.get(timeout=3600)
        submitted = len(outcome["sent"])
        deadline = time.time() + 120 + count / 20
        while ask(world_end, "count") - base < submitted and time.time() < deadline:
            time.sleep(0.1)
    cpu_after = (cpu_seconds(), cpu_seconds(moto_pid), cpu_seconds(clients.pid), cpu_seconds(world.pid))
    load_after = os.getloadavg()[0]
    clients.join(timeout=60)
    invocations = stack["transport"].take()
    relay_reports = [ask(end, "report") for _, end in stack["relays"]]
    seen = ask(world_end, "report")
    arrivals = {tag: t for tag, (t, _) in seen.items() if tag.startswith(run)}
    over_tls = sum(1 for tag, (_, tls) in seen.items() if tag.startswith(run) and tls)
    relayed = len(arrivals)
    first = outcome["started"]
    last = max(arrivals.values()) if arrivals else time.time()
    end_to_end = [arrivals[tag] - outcome["sent"][tag] for tag in arrivals if tag in outcome["sent"]]

    aws = Counter(requests.snapshot())
    source: Counter[str] = Counter()
    for report in relay_reports:
        aws.update(report["aws"])
        source.update(report["event_source"])
    per = max(relayed, 1)
    by_operation = {k: round(v / per, 3) for k, v in sorted(aws.items())}
    invokes = Counter(invocations)
    invokes["RelayFunction.batch"] = sum(r["batches"] for r in relay_reports)
    relay_cpu = sum(r["cpu_seconds"] for r in relay_reports) - sum(relay_cpu_before)
    storage = sum(aws.values()) / per
    lambda_invokes = sum(invokes.values()) / per
    event_source = sum(source.values()) / per
    names = ("gateway_and_submit_functions", "moto", "mail_clients", "dns_and_mx")
    cpu_ms = {
        **{
            name: (after - before) * 1000 / per
            for name, before, after in zip(names, cpu_before, cpu_after, strict=True)
        },
        "relay_functions": relay_cpu * 1000 / per,
    }
    moto_requests = sum(aws.values()) + sum(source.values())
    total_cpu_ms = sum(cpu_ms.values())
    return {
        "messages": count,
        "submitted": submitted,
        "relayed_to_mx": relayed,
        "over_tls_at_mx": over_tls,
        "errors": outcome["errors"][:5],
        "sessions": outcome["sessions"],
        "seconds_end_to_end": round(last - first, 2),
        "messages_per_second_end_to_end": round(relayed / max(last - first, 1e-9), 1),
        "messages_per_second_submission": round(submitted / max(outcome["finished"] - first, 1e-9), 1),
        "submission_latency_ms": {
            "p50": round(percentile(outcome["latencies"], 0.5) * 1000, 1),
            "p99": round(percentile(outcome["latencies"], 0.99) * 1000, 1),
        },
        "end_to_end_latency_ms": {
            "p50": round(percentile(end_to_end, 0.5) * 1000, 1),
            "p99": round(percentile(end_to_end, 0.99) * 1000, 1),
            "mean": round(statistics.fmean(end_to_end) * 1000, 1) if end_to_end else 0,
        },
        "relay_batches": sum(r["batches"] for r in relay_reports),
        "relay_records_per_batch": round(
            sum(r["records"] for r in relay_reports) / max(sum(r["batches"] for r in relay_reports), 1), 2
        ),
        "relay_failed_records": sum(r["failed"] for r in relay_reports),
        "aws_requests_per_message": {
            "s3_dynamodb_sqs_eventbridge_ssm": round(storage, 2),
            "lambda_invoke": round(lambda_invokes, 2),
            "sqs_event_source": round(event_source, 2),
            "total": round(storage + lambda_invokes + event_source, 2),
        },
        "aws_requests_per_message_by_operation": by_operation,
        "event_source_requests_per_message": {k: round(v / per, 3) for k, v in sorted(source.items())},
        "function_invocations_per_message": {k: round(v / per, 3) for k, v in sorted(invokes.items())},
        "cpu_ms_per_message": {name: round(ms, 2) for name, ms in cpu_ms.items()},
        "cpu_ms_per_message_total": round(total_cpu_ms, 2),
        "moto": {
            "requests_per_message": round(moto_requests / per, 2),
            "cpu_ms_per_request": round(cpu_ms["moto"] * per / max(moto_requests, 1), 2),
            "share_of_cpu": round(cpu_ms["moto"] / max(total_cpu_ms, 1e-9), 3),
        },
        "logins_per_message": round(invokes["AuthFunction.authenticate"] / per, 3),
        # argon2id verifications; the other logins were the container's cache's (mailcore.passwords)
        "password_checks_per_message": round(argon2.count / per, 3),
        "load_average_1min_before_after": [round(load_before, 2), round(load_after, 2)],
    }


def moto_floor(stack: dict[str, Any], count: int = 300) -> float:
    """moto's CPU ms for its cheapest request (GetItem of a missing item, one client, one
    at a time): what any request costs it, before its own work (HTTP server, a new
    connection and thread per request, Flask, the dispatch)."""
    store = stack["store"]
    dynamodb, table = store.mailboxes.dynamodb, store.mailboxes.table
    before = cpu_seconds(stack["moto"].pid)
    for n in range(count):
        dynamodb.get_item(TableName=table, Key={"pk": {"S": f"bench-floor-{n}"}, "sk": {"S": "x"}})
    return (cpu_seconds(stack["moto"].pid) - before) * 1000 / count


class Argon2Counter:
    """The argon2id verifications in this process (where the AuthFunction runs) while open."""

    def __init__(self) -> None:
        self.count = 0

    def __enter__(self) -> Argon2Counter:
        from mailcore import passwords

        real = self._real = passwords.verify_password

        def counted(*args: Any, **kwargs: Any) -> bool:
            self.count += 1
            return real(*args, **kwargs)

        passwords.verify_password = counted
        return self

    def __exit__(self, *exc: object) -> None:
        from mailcore import passwords

        passwords.verify_password = self._real


def password_check_cpu_ms(count: int = 3) -> float:
    """CPU ms of one AUTH's password check (argon2id, mailcore.passwords), in this process."""
    from mailcore.passwords import hash_password, verify_password

    stored = hash_password(PASSWORD)
    before = time.process_time()
    for _ in range(count):
        verify_password(stored, PASSWORD)
    return (time.process_time() - before) * 1000 / count


def budget(run: dict[str, Any], moto_floor_ms: float, password_ms: float) -> dict[str, Any]:
    """Where the target's CPU budget goes: ``cores`` seconds of CPU per second, so at
    TARGET_MESSAGES_PER_SECOND each message may use cores * 1000 / target ms of CPU in all."""
    cores = os.cpu_count() or 1
    allowed = cores * 1000 / TARGET_MESSAGES_PER_SECOND
    cpu = run["cpu_ms_per_message"]
    total = run["cpu_ms_per_message_total"]
    moto = run["moto"]
    passwords = run["password_checks_per_message"] * password_ms
    return {
        "cores": cores,
        "cpu_ms_per_message_allowed_at_target": round(allowed, 2),
        "cpu_ms_per_message_measured": total,
        "messages_per_second_the_cpu_allows": round(cores * 1000 / max(total, 1e-9), 1),
        "moto_cpu_ms_per_message": cpu["moto"],
        "moto_cpu_ms_per_request": moto["cpu_ms_per_request"],
        "moto_cpu_ms_for_its_cheapest_request": round(moto_floor_ms, 2),
        "moto_requests_per_message": moto["requests_per_message"],
        "password_check_cpu_ms_each": round(password_ms, 1),
        "password_checks_cpu_ms_per_message": round(passwords, 2),
        "cpu_ms_per_message_without_moto": round(total - cpu["moto"], 2),
        "explanation": (
            f"{cores} cores at {TARGET_MESSAGES_PER_SECOND} msg/s leave {allowed:.1f} ms of CPU per message; "
            f"measured {total:.1f} ms. moto: {moto['requests_per_message']:.2f} requests/message x "
            f"{moto['cpu_ms_per_request']:.2f} ms/request = {cpu['moto']:.1f} ms (its cheapest request costs it "
            f"{moto_floor_ms:.2f} ms); the rest, {total - cpu['moto']:.1f} ms, includes "
            f"{passwords:.1f} ms of password checks (AUTH once per session of {run['sessions'] and round(run['submitted'] / run['sessions'])} "
            f"messages; {run['password_checks_per_message']:.3f} argon2id verifications per message of "
            f"{password_ms:.0f} ms each, for {run['logins_per_message']:.3f} logins)."
        ),
    }


class InstantFunctions:
    """Functions that answer at once without AWS: what the submission listener alone carries."""

    def invoke(self, function: str, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("op") == "authenticate":
            return {"ok": True, "user": event["username"]}
        if event.get("op") == "resolve":
            return {"ok": True, "recipient": event["recipient"], "local_domain": False, "deliverable": False}
        return {"ok": True, "message_id": "<x@bench>", "queued": [], "delivered": []}


def gateway_only(
    stack: dict[str, Any], users: list[str], recipients: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    """The same mail clients against a second submission listener whose functions answer
    at once: TLS, AUTH, SMTP and the gateway's own work, without the functions or moto."""
    from gateway.config import GatewayConfig
    from gateway.functions import FunctionClient
    from gateway.server import Gateway

    config = GatewayConfig(ports={"submission": 0}, hostname="bench.local", mail_bucket="unused")
    gateway = Gateway(config, FunctionClient(InstantFunctions()), tls_dir=ROOT / ".local" / "bench-tls")
    asyncio.run_coroutine_threadsafe(gateway.start(), stack["loop"]).result(timeout=30)
    try:
        ctx = multiprocessing.get_context("spawn")
        jobs = [(recipients[n % len(recipients)], f"stub-{n}") for n in range(args.gateway_only)]
        results, go = ctx.Queue(), ctx.Event()
        address = tuple(gateway.listening["submission"])
        clients = ctx.Process(
            target=clients_process, args=(address, users, jobs, args.per_session, args.size, results, go)
        )
        clients.start()
        time.sleep(1.5)
        before = cpu_seconds()
        go.set()
        outcome = results.get(timeout=600)
        used = cpu_seconds() - before
        clients.join(timeout=60)
    finally:
        asyncio.run_coroutine_threadsafe(gateway.stop(), stack["loop"]).result(timeout=30)
    sent = len(outcome["sent"])
    return {
        "messages": args.gateway_only,
        "submitted": sent,
        "errors": outcome["errors"][:5],
        "messages_per_second": round(sent / max(outcome["finished"] - outcome["started"], 1e-9), 1),
        "gateway_cpu_ms_per_message": round(used * 1000 / max(sent, 1), 2),
        "note": "sessions of --per-session messages each: STARTTLS and AUTH included, amortized",
    }


def stop(stack: dict[str, Any]) -> None:
    for process, end in stack["relays"]:
        with contextlib.suppress(OSError):
            end.send(None)
        process.join(timeout=15)
    world, world_end = stack["world"]
    with contextlib.suppress(OSError):
        world_end.send(None)
    world.join(timeout=15)
    asyncio.run_coroutine_threadsafe(stack["gateway"].stop(), stack["loop"]).result(timeout=30)
    stack["loop"].call_soon_threadsafe(stack["loop"].stop)
    stack["moto"].terminate()
    stack["moto"].join(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Submission-to-MX relay benchmark on the local stack")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8, help="concurrent submission sessions")
    parser.add_argument("--per-session", type=int, default=25, help="messages per authenticated session")
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--domains", type=int, default=4, help="remote domains")
    parser.add_argument("--recipients", type=int, default=40, help="distinct remote recipients")
    parser.add_argument("--relay-workers", type=int, default=2, help="concurrent RelayFunction executions")
    parser.add_argument("--stock-moto", action="store_true", help="moto without devstack/moto_tuning.py")
    parser.add_argument("--gateway-only", type=int, default=2000, help="messages for the stub-function phase (0: skip)")
    parser.add_argument("--profile", default="", help="a directory for cProfile files of the relay workers")
    parser.add_argument(
        "--dkim", action="store_true", help="the relay signs every message (a key for the users' domain)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    report_out, sys.stdout = sys.stdout, sys.stderr  # Powertools prints EMF metrics to stdout
    domains = [f"remote{n}-{secrets.token_hex(3)}.test" for n in range(args.domains)]
    report: dict[str, Any] = {
        "machine_at_start": machine(),
        "moto": "process" + (" (stock)" if args.stock_moto else " (tuned: devstack/moto_tuning.py)"),
        "parameters": {k: v for k, v in vars(args).items()},
        "targets": {
            "messages_per_second": TARGET_MESSAGES_PER_SECOND,
            "aws_requests_per_message": TARGET_REQUESTS_PER_MESSAGE,
        },
    }
    stack = start(args, domains)
    try:
        store = stack["store"]
        local = store.accounts.add_domain(f"bench{secrets.token_hex(3)}.test")
        if args.dkim:
            from mailcore import dkim
            from mailcore.aws import Clients

            keys = dkim.DkimKeys(Clients().get("ssm"), store.settings.dkim_parameter_path)
            keys.put(dkim.generate_key(str(local)))
        users = [
            str(store.add_user(f"client{n}-{secrets.token_hex(2)}@{local}", PASSWORD)) for n in range(args.clients)
        ]
        recipients = [f"rcpt{n}@{domains[n % len(domains)]}" for n in range(args.recipients)]
        # Warm-up (not reported): functions' stores and clients, the resolver caches, DKIM lookups.
        run_phase(stack, users, recipients, max(4 * args.clients, args.recipients), args)
        result = run_phase(stack, users, recipients, args.messages, args)
        report["run"] = result
        report["cpu_budget"] = budget(result, moto_floor(stack), password_check_cpu_ms())
        if args.gateway_only:
            report["submission_listener_with_instant_functions"] = gateway_only(stack, users, recipients, args)
        report["verdict"] = {
            "messages_per_second_ok": result["messages_per_second_end_to_end"] >= TARGET_MESSAGES_PER_SECOND,
            "aws_requests_per_message_ok": result["aws_requests_per_message"]["total"] <= TARGET_REQUESTS_PER_MESSAGE,
            "every_message_relayed": result["relayed_to_mx"] == args.messages,
        }
        report["machine_at_end"] = machine()
    finally:
        stop(stack)
    json.dump(report, report_out, indent=2)
    print(file=report_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
