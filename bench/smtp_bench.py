"""SMTP ingest benchmark (the MX role): throughput, latency, memory and AWS cost, as JSON.

Layout, like ``make run`` but with the emulated AWS in a process of its own (by default),
so moto does not share the gateway's interpreter lock:

* moto: ``ThreadedMotoServer`` in a child process (``--moto process``), or in a thread of
  this process as ``make run`` has it (``--moto thread``), or moto's in-process mock
  (``--moto inprocess``), with template.yaml's resources and the load fixes of
  devstack/moto_tuning.py (``--stock-moto``: without them);
* the gateway in this process (its own event-loop thread), with the functions in-process
  (``InProcessTransport``), as ``make run`` has it;
* the senders in a child process: N concurrent SMTP connections (asyncio, raw sockets),
  each sending one message after another, pipelining MAIL/RCPT/DATA (RFC 2920) as Postfix
  does, one recipient per message.

Phases:

1. memory (first, while the process is fresh): the RSS an idle connection costs (N
   connections after EHLO), and how much a 35 MB message raises the gateway's RSS. For
   the 35 MB message the functions run in a worker process (as Lambda runs apart from the
   gateway), so this process's RSS is the gateway's alone;
2. throughput for each message size: messages/s, p50/p99 latency from the end of the
   data (the final ``.``) to the 250 reply, AWS requests per delivered message (every
   request of the gateway and the functions, ``mailcore.accounting.count_requests``),
   function invocations (Lambda invokes in the cloud), and a check that every message is
   in its recipient's INBOX, byte for byte as the client sent it;
3. the exact cost of one single-recipient delivery, with the recipient's resolution
   cached (the steady state) and uncached (the first message for an address);
4. the gateway alone: the same senders against a gateway whose functions answer at once
   (no AWS), to show what the gateway itself costs and carries.

Usage: ``.venv/bin/python bench/smtp_bench.py [--senders 10] [--sizes 4096,102400,10485760]
[--counts 2000,300,20] [--moto process|thread|inprocess] [--stock-moto] [--idle 1000]
[--big-mb 35] [--gateway-only 3000]``. ``--moto inprocess`` uses moto's in-process mock
(``mock_aws``) instead of its server; ``--stock-moto`` leaves out the load fixes of
devstack/moto_tuning.py (without them, concurrent deliveries get HTTP 500s from moto's
transactions, answered 451; ``--moto thread`` always has them, as devstack.LocalStack
applies them). The figures depend on the machine and its load (reported
under "machine_at_start"/"machine_at_end" and per phase): moto, the gateway, the
functions and the senders share its cores; "cpu_ms_per_message" says who used them.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import multiprocessing
import os
import platform
import resource
import secrets
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SENDER = "bench@sender.example"

# -- the senders (a child process) -------------------------------------------------------


class SmtpError(Exception):
    pass


async def read_reply(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One whole (possibly multi-line) reply: (code, last line)."""
    while True:
        line = await reader.readuntil(b"\r\n")
        if line[3:4] != b"-":
            return int(line[:3]), line


async def expect(reader: asyncio.StreamReader, code: int) -> None:
    got, line = await read_reply(reader)
    if got != code:
        raise SmtpError(f"expected {code}, got {line!r}")


def make_message(n: int, size: int, tag: str) -> bytes:
    """About ``size`` octets of text/plain, the same for the same arguments, unique by its
    Message-ID for each ``(n, tag)``; no line starts with a dot."""
    header = (
        f"From: Bench Sender <{SENDER}>\r\nTo: bench@example.test\r\nSubject: bench {tag} {n}\r\n"
        f"Message-ID: <{tag}-{n}@sender.example>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog; a line of an SMTP benchmark body.\r\n"
    body = line * max(0, (size - len(header)) // len(line))
    return header + body


@dataclass(frozen=True)
class Jobs:
    """Message ``n`` of ``count`` goes to ``recipients[n % len(recipients)]``; the messages
    are made where they are sent, so no process holds them all."""

    recipients: list[str]
    count: int
    size: int
    tag: str

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, n: int) -> tuple[str, bytes]:
        return self.recipients[n % len(self.recipients)], make_message(n, self.size, self.tag)


async def send_messages(host: str, port: int, jobs: Jobs, progress: dict[str, Any], latencies: list[float]) -> None:
    """One connection: EHLO, then MAIL/RCPT/DATA pipelined per message, until no job is left.

    A refused message (a 4xx or 5xx reply) is counted and the connection goes on, as an
    MTA's would (it would retry the message later).
    """
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    try:
        await expect(reader, 220)
        writer.write(b"EHLO sender.example\r\n")
        await expect(reader, 250)
        while progress["next"] < len(jobs):
            recipient, message = jobs[progress["next"]]
            progress["next"] += 1
            writer.write(f"MAIL FROM:<{SENDER}> SIZE={len(message)}\r\nRCPT TO:<{recipient}>\r\nDATA\r\n".encode())
            replies = [await read_reply(reader) for _ in range(3)]
            if [code for code, _ in replies] != [250, 250, 354]:
                progress["refused"].append(repr(replies))
                if replies[2][0] == 354:  # a refused RCPT with DATA accepted cannot happen here
                    writer.write(b".\r\n")
                    await read_reply(reader)
                writer.write(b"RSET\r\n")
                await read_reply(reader)
                continue
            view = memoryview(message.replace(b"\r\n.", b"\r\n.."))  # RFC 5321 §4.5.2
            for start in range(0, len(view), 1 << 20):
                writer.write(view[start : start + (1 << 20)])
                await writer.drain()
            writer.write(b".\r\n")
            await writer.drain()
            started = time.perf_counter()
            code, line = await read_reply(reader)
            if code == 250:
                latencies.append(time.perf_counter() - started)
                progress["delivered"] += 1
            else:
                progress["refused"].append(line.decode(errors="replace").strip())
        writer.write(b"QUIT\r\n")
        await expect(reader, 221)
    finally:
        writer.close()


def sender_process(address: tuple[str, int], senders: int, jobs: Jobs, results: Any, go: Any) -> None:
    async def run() -> dict[str, Any]:
        latencies: list[float] = []
        progress: dict[str, Any] = {"next": 0, "delivered": 0, "refused": []}
        go.wait()
        started = time.perf_counter()
        outcome = await asyncio.gather(
            *(send_messages(*address, jobs, progress, latencies) for _ in range(senders)), return_exceptions=True
        )
        elapsed = time.perf_counter() - started
        return {
            "sent": progress["delivered"],
            "refused": len(progress["refused"]),
            "seconds": elapsed,
            "latencies": latencies,
            "errors": ([repr(o) for o in outcome if isinstance(o, BaseException)] + progress["refused"])[:5],
        }

    results.put(asyncio.run(run()))


def idle_process(address: tuple[str, int], count: int, ready: Any, release: Any) -> None:
    """Open ``count`` connections, say EHLO on each, then hold them until released."""

    async def run() -> None:
        held = []
        for _ in range(count):
            reader, writer = await asyncio.open_connection(*address)
            await expect(reader, 220)
            writer.write(b"EHLO idle.example\r\n")
            await expect(reader, 250)
            held.append(writer)
        ready.put(len(held))
        await asyncio.to_thread(release.wait)
        for writer in held:
            writer.close()

    asyncio.run(run())


def big_sender_process(address: tuple[str, int], recipient: str, megabytes: int, results: Any) -> None:
    """One message of ``megabytes`` MB, written in 64 KB pieces; reports the final reply."""

    async def run() -> dict[str, Any]:
        reader, writer = await asyncio.open_connection(*address)
        await expect(reader, 220)
        writer.write(b"EHLO big.example\r\n")
        await expect(reader, 250)
        writer.write(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{recipient}>\r\nDATA\r\n".encode())
        await expect(reader, 250)
        await expect(reader, 250)
        await expect(reader, 354)
        line = b"Z" * 998 + b"\r\n"
        writer.write(f"Subject: big {megabytes} MB\r\nMessage-ID: <big-{secrets.token_hex(8)}@x>\r\n\r\n".encode())
        for _ in range(megabytes * 1024 * 1024 // len(line)):
            writer.write(line)
            if writer.transport.get_write_buffer_size() > 1 << 16:
                await writer.drain()
        writer.write(b".\r\n")
        await writer.drain()
        started = time.perf_counter()
        code, text = await read_reply(reader)
        seconds = time.perf_counter() - started
        writer.write(b"QUIT\r\n")
        writer.close()
        return {"code": code, "reply": text.decode().strip(), "end_of_data_to_reply_s": round(seconds, 3)}

    results.put(asyncio.run(run()))


# -- moto in a process of its own ----------------------------------------------------------


def moto_process(ports: Any, tuned: bool) -> None:
    from moto.server import ThreadedMotoServer

    if tuned:
        from devstack import moto_tuning as _moto_tuning

        _moto_tuning.apply()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    ports.put(server.get_host_and_port())
    threading.Event().wait()


# -- functions in a process of their own (as Lambda, for the memory phase) -----------------


def function_worker(conn: Any, specs: Any, environment: dict[str, str]) -> None:
    os.environ.update(environment)
    from gateway.functions import InProcessTransport

    transport = InProcessTransport(specs)
    while True:
        request = conn.recv()
        if request is None:
            return
        function, event = request
        try:
            conn.send(("ok", transport.invoke(function, event)))
        except Exception as error:  # a TemporaryFailure, re-raised on the gateway side
            conn.send(("error", str(error)))


class WorkerTransport:
    """The functions in another process, one call at a time (the memory phase has one client)."""

    def __init__(self, specs: Any, environment: dict[str, str]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=function_worker, args=(child, specs, environment), daemon=True)
        self.process.start()
        self._lock = threading.Lock()

    def invoke(self, function: str, event: dict[str, Any]) -> dict[str, Any]:
        from gateway.functions import TemporaryFailure

        with self._lock:
            self.conn.send((function, event))
            status, result = self.conn.recv()
        if status != "ok":
            raise TemporaryFailure(function, result)
        return dict(result)

    def close(self) -> None:
        self.conn.send(None)
        self.process.join(timeout=10)


class CountingTransport:
    """Counts function invocations (Lambda Invoke requests in the cloud) per op; the
    transport it wraps can be swapped (in-process, or the worker process)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def invoke(self, function: str, event: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.counts[f"{function}.{event.get('op')}"] += 1
        return self.inner.invoke(function, event)

    def take(self) -> dict[str, int]:
        with self._lock:
            counts = dict(self.counts)
            self.counts.clear()
        return counts


# -- the stack (this process) ---------------------------------------------------------------


@dataclass
class Stack:
    local: Any
    info: Any
    store: Any
    gateway: Any
    loop: asyncio.AbstractEventLoop
    transport: CountingTransport
    in_process: Any
    moto: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def address(self) -> tuple[str, int]:
        return tuple(self.gateway.listening["smtp"])  # type: ignore[return-value]


def start_stack(moto_mode: str, tuned: bool) -> Stack:
    from mailcore.settings import Settings
    from mailcore.store import Store

    from devstack.stack import LocalStack
    from gateway.config import GatewayConfig
    from gateway.connlimits import ConnectionLimits
    from gateway.functions import FunctionClient, InProcessTransport
    from gateway.server import Gateway

    ctx = multiprocessing.get_context("spawn")
    local = LocalStack(port=0)
    moto = None
    if moto_mode == "inprocess":
        info = provision_in_process(local, tuned)
    elif moto_mode == "process":
        ports = ctx.Queue()
        moto = ctx.Process(target=moto_process, args=(ports, tuned), daemon=True, name="moto")
        moto.start()
        host, port = ports.get(timeout=60)
        info = local._provision(f"http://{host}:{port}")  # the devstack's own provisioning
    else:
        if tuned:
            from devstack import moto_tuning as _moto_tuning

            _moto_tuning.apply()
        info = local.start()
    os.environ.update(info.process_environment if info.endpoint else info.environment)
    store = Store.build(Settings.from_env(info.environment))
    in_process = InProcessTransport(info.functions)
    transport = CountingTransport(in_process)
    # Every bench connection comes from 127.0.0.1: no per-client cap on the idle thousands.
    limits = ConnectionLimits(total=100_000, per_client=100_000)
    config = GatewayConfig(
        ports={"smtp": 0}, hostname="bench.local", mail_bucket=info.resources["MailBucket"], connection_limits=limits
    )
    gateway = Gateway(config, FunctionClient(transport), tls_dir=ROOT / ".local" / "bench-tls")
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="gateway", daemon=True).start()
    asyncio.run_coroutine_threadsafe(gateway.start(), loop).result(timeout=30)
    return Stack(local, info, store, gateway, loop, transport, in_process, moto)


def provision_in_process(local: Any, tuned: bool) -> Any:
    """moto's in-process mock (``mock_aws``: no HTTP server, requests answered inside
    botocore) with template.yaml's resources, as devstack.LocalStack provisions them."""
    from dataclasses import replace

    import boto3
    from moto import mock_aws

    from devstack.stack import LOCAL_CREDENTIALS, StackInfo
    from devstack.template import Resolver, create_resources, function_specs, load_template, shared_environment

    os.environ.pop("AWS_ENDPOINT_URL", None)
    os.environ.update({**LOCAL_CREDENTIALS, "AWS_DEFAULT_REGION": local.region})
    mock = mock_aws()
    mock.start()
    if tuned:
        from devstack import moto_tuning as _moto_tuning

        _moto_tuning.apply()
    template = load_template(local.template)
    session = boto3.session.Session(region_name=local.region)
    resolver = Resolver(template, parameters=local.parameters, region=local.region, endpoint="")
    resources = create_resources(template, session, resolver)
    specs = {
        logical: replace(spec, environment={**spec.environment, **local.function_environment})
        for logical, spec in function_specs(template, resolver).items()
    }
    info = StackInfo("", local.region, resources, specs, shared_environment(specs.values()))
    return replace(info)


def stop_stack(stack: Stack) -> None:
    asyncio.run_coroutine_threadsafe(stack.gateway.stop(), stack.loop).result(timeout=30)
    stack.loop.call_soon_threadsafe(stack.loop.stop)
    if stack.moto is not None:
        stack.moto.terminate()
        stack.moto.join(timeout=10)
    elif stack.info.endpoint:
        stack.local.stop()


def new_user(store: Any, domain: str, name: str) -> str:
    return str(store.add_user(f"{name}-{secrets.token_hex(3)}@{domain}", "bench password"))


def rss_kb(pid: int | str = "self", field_name: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- phases ---------------------------------------------------------------------------------


def idle_benchmark(stack: Stack, count: int) -> dict[str, Any]:
    import gc

    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Queue(), ctx.Event()
    gc.collect()
    time.sleep(0.5)
    before = rss_kb()
    client = ctx.Process(target=idle_process, args=(stack.address(), count, ready, release))
    client.start()
    opened = ready.get(timeout=300)
    time.sleep(1.0)
    gc.collect()
    during = rss_kb()
    release.set()
    client.join(timeout=60)
    return {
        "connections": opened,
        "rss_before_kb": before,
        "rss_with_idle_connections_kb": during,
        "kb_per_idle_connection": round((during - before) / max(opened, 1), 1),
        "target_kb": 64,
    }


class RssSampler:
    """The highest VmRSS of this process while it runs (sampled every 5 ms)."""

    def __init__(self) -> None:
        self.peak = rss_kb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_kb())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def big_message_benchmark(stack: Stack, domain: str, megabytes: int) -> dict[str, Any]:
    """A 1 MB message (staged with one PutObject: it builds the gateway's S3 client and a
    worker thread, once per process), then one of ``megabytes`` MB, twice: the first shows
    what streaming a message costs, the second that nothing of the first is kept."""
    import gc

    ctx = multiprocessing.get_context("spawn")
    user = new_user(stack.store, domain, "big")
    worker = WorkerTransport(stack.info.functions, stack.info.process_environment)
    stack.transport.inner = worker
    runs = []
    try:
        for size in (1, megabytes, megabytes):
            results = ctx.Queue()
            gc.collect()
            time.sleep(0.5)
            before = rss_kb()
            with RssSampler() as sampler:
                client = ctx.Process(target=big_sender_process, args=(stack.address(), user, size, results))
                client.start()
                outcome = results.get(timeout=600)
                client.join(timeout=60)
            runs.append({**outcome, "rss_before_kb": before, "rss_peak_kb": sampler.peak, "rss_after_kb": rss_kb()})
    finally:
        stack.transport.inner = stack.in_process
        worker.close()
        stack.transport.take()
    inbox = stack.store.mailboxes.get(user, "INBOX")
    records = stack.store.messages.list_range(inbox.mailbox_id)
    first, second = runs[1:]
    return {
        "message_mb": megabytes,
        "reply": first["reply"],
        "end_of_data_to_reply_s": first["end_of_data_to_reply_s"],
        "visible_in_mailbox": len(records) == 3,
        "stored_octets": [r.size for r in records],
        "gateway_rss_rise_mb": round((first["rss_peak_kb"] - first["rss_before_kb"]) / 1024, 1),
        "gateway_rss_rise_second_message_mb": round((second["rss_peak_kb"] - second["rss_before_kb"]) / 1024, 1),
        "gateway_rss_rise_warm_up_1mb_mb": round((runs[0]["rss_peak_kb"] - runs[0]["rss_before_kb"]) / 1024, 1),
        "target_rise_mb": 16,
        "runs": runs,
        "note": "functions in a worker process during this phase, so the RSS is the gateway's; "
        "the 1 MB warm-up builds the gateway's S3 client (botocore's S3 model) and a worker thread",
    }


def throughput_benchmark(
    stack: Stack, domain: str, size: int, count: int, senders: int, recipients: int
) -> dict[str, Any]:
    from mailcore.accounting import count_requests

    ctx = multiprocessing.get_context("spawn")
    users = [new_user(stack.store, domain, f"s{size}") for _ in range(recipients)]
    tag = secrets.token_hex(3)
    jobs = Jobs(users, count, size, tag)
    results, go = ctx.Queue(), ctx.Event()
    client = ctx.Process(target=sender_process, args=(stack.address(), senders, jobs, results, go))
    client.start()
    time.sleep(1.0)  # let the child start
    stack.transport.take()
    moto_pid = stack.moto.pid if stack.moto is not None else None
    cpu_before = (cpu_seconds(), cpu_seconds(moto_pid) if moto_pid else 0.0, cpu_seconds(client.pid))
    load_before = os.getloadavg()[0]
    with count_requests() as requests:
        go.set()
        outcome = results.get(timeout=3600)
    cpu_after = (cpu_seconds(), cpu_seconds(moto_pid) if moto_pid else 0.0, cpu_seconds(client.pid))
    load_after = os.getloadavg()[0]
    client.join(timeout=60)
    invokes = stack.transport.take()
    delivered = outcome["sent"]
    # every message in its INBOX, as the client sent it (large ones: a sample)
    expected = {hashlib.sha256(jobs[n][1]).digest() for n in range(count)}
    stored = checked = identical = 0
    for user in users:
        inbox = stack.store.mailboxes.get(user, "INBOX")
        records = stack.store.messages.list_range(inbox.mailbox_id)
        stored += len(records)
        for record in records if size <= 1 << 20 else records[:2]:
            blob = stack.store.blobs.get(record.sha256)
            checked += 1
            sent = blob[blob.find(b"\r\nFrom: ") + 2 :]  # under our Return-Path and Received
            identical += hashlib.sha256(sent).digest() in expected
    latencies = outcome["latencies"]
    return {
        "message_octets": len(make_message(0, size, tag)),
        "senders": senders,
        "recipients": recipients,
        "messages": count,
        "delivered": delivered,
        "refused": outcome["refused"],
        "errors": outcome["errors"],
        "seconds": round(outcome["seconds"], 2),
        "messages_per_second": round(delivered / outcome["seconds"], 1),
        "latency_end_of_data_to_250_ms": {
            "p50": round(percentile(latencies, 0.5) * 1000, 1),
            "p99": round(percentile(latencies, 0.99) * 1000, 1),
            "mean": round(statistics.fmean(latencies) * 1000, 1) if latencies else 0,
        },
        "aws_requests_per_message": round(requests.total / max(delivered, 1), 2),
        "aws_requests_per_message_by_operation": {
            k: round(v / max(delivered, 1), 2) for k, v in sorted(requests.snapshot().items())
        },
        "function_invocations_per_message": {k: round(v / max(delivered, 1), 2) for k, v in sorted(invokes.items())},
        "cpu_ms_per_message": {
            name: round((after - before) * 1000 / max(delivered, 1), 2)
            for name, before, after in zip(
                ("gateway_and_functions" + ("" if moto_pid else "_and_moto"), "moto", "senders"),
                cpu_before,
                cpu_after,
                strict=True,
            )
            if moto_pid or name != "moto"
        },
        "load_average_1min_before_after": [round(load_before, 2), round(load_after, 2)],
        "visible_in_mailbox": stored,
        "all_visible": stored == count == delivered,
        "bytes_checked": checked,
        "bytes_identical": identical,
    }


class InstantFunctions:
    """Functions that answer at once without AWS: what the gateway alone can carry."""

    def invoke(self, function: str, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("op") == "resolve":
            return {"ok": True, "recipient": event["recipient"], "local_domain": True, "deliverable": True}
        return {"ok": True, "deliveries": []}


def gateway_only_benchmark(stack: Stack, count: int, senders: int) -> dict[str, Any]:
    """The same senders against a second gateway whose functions answer at once."""
    from gateway.config import GatewayConfig
    from gateway.functions import FunctionClient
    from gateway.server import Gateway

    config = GatewayConfig(ports={"smtp": 0}, hostname="bench.local", mail_bucket="unused")
    gateway = Gateway(config, FunctionClient(InstantFunctions()), tls_dir=ROOT / ".local" / "bench-tls")
    asyncio.run_coroutine_threadsafe(gateway.start(), stack.loop).result(timeout=30)
    out = {}
    try:
        for size in (4096, 102400):
            ctx = multiprocessing.get_context("spawn")
            jobs = Jobs(["someone@bench.example"], count, size, "stub")
            results, go = ctx.Queue(), ctx.Event()
            client = ctx.Process(
                target=sender_process, args=(tuple(gateway.listening["smtp"]), senders, jobs, results, go)
            )
            client.start()
            time.sleep(1.0)
            before = cpu_seconds()
            go.set()
            outcome = results.get(timeout=600)
            used = cpu_seconds() - before
            client.join(timeout=60)
            out[str(size)] = {
                "messages_per_second": round(outcome["sent"] / outcome["seconds"], 1),
                "gateway_cpu_ms_per_message": round(used * 1000 / max(outcome["sent"], 1), 3),
                "refused": outcome["refused"],
            }
    finally:
        asyncio.run_coroutine_threadsafe(gateway.stop(), stack.loop).result(timeout=30)
    return {"senders": senders, "messages": count, "by_size": out}


def single_delivery_cost(stack: Stack, domain: str) -> dict[str, Any]:
    """The AWS requests of one single-recipient transaction, cached and uncached resolution."""
    import smtplib

    from mailcore.accounting import count_requests

    user = new_user(stack.store, domain, "cost")
    out: dict[str, Any] = {}
    for label in ("first_message_for_the_address", "steady_state"):
        message = make_message(0, 4096, f"{label}-{secrets.token_hex(4)}")
        stack.transport.take()
        with count_requests() as requests, smtplib.SMTP(*stack.address(), timeout=30) as client:
            client.ehlo("cost.example")
            client.sendmail(SENDER, [user], message)
        out[label] = {
            "aws_requests": requests.snapshot(),
            "total": requests.total,
            "function_invocations": stack.transport.take(),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SMTP ingest benchmark on the local stack")
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--recipients", type=int, default=10, help="distinct recipients, messages spread over them")
    parser.add_argument("--sizes", default="4096,102400,10485760")
    parser.add_argument("--counts", default="2000,300,20")
    parser.add_argument("--moto", choices=("process", "thread", "inprocess"), default="process")
    parser.add_argument(
        "--stock-moto",
        action="store_true",
        help="moto as it comes, without the load fixes of devstack/moto_tuning.py",
    )
    parser.add_argument("--gateway-only", type=int, default=3000, help="messages for the stub-function phase (0: skip)")
    parser.add_argument("--idle", type=int, default=1000, help="idle connections to measure (0: skip)")
    parser.add_argument("--big-mb", type=int, default=35, help="the streamed message's size (0: skip)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    counts = [int(c) for c in args.counts.split(",") if c]
    logging.basicConfig(level=logging.WARNING)
    # Powertools Metrics prints EMF lines to stdout every 100 values even when disabled
    # (POWERTOOLS_METRICS_DISABLED): keep stdout for the report alone.
    report_out, sys.stdout = sys.stdout, sys.stderr
    report: dict[str, Any] = {
        "machine_at_start": machine(),
        "moto": args.moto + (" (stock)" if args.stock_moto else " (tuned: devstack/moto_tuning.py)"),
    }
    stack = start_stack(args.moto, not args.stock_moto)
    try:
        domain = stack.store.accounts.add_domain(f"bench{secrets.token_hex(3)}.test")
        if args.idle:
            report["idle_connections"] = idle_benchmark(stack, args.idle)
        if args.big_mb:
            report["streamed_message"] = big_message_benchmark(stack, domain, args.big_mb)
        # Warm up (excluded): the first calls build the functions' stores and AWS clients.
        throughput_benchmark(stack, domain, 4096, 4 * args.senders, args.senders, 2)
        report["throughput"] = [
            throughput_benchmark(stack, domain, size, count, args.senders, args.recipients)
            for size, count in zip(sizes, counts, strict=True)
        ]
        report["single_recipient_delivery_cost"] = single_delivery_cost(stack, domain)
        if args.gateway_only:
            report["gateway_with_instant_functions"] = gateway_only_benchmark(stack, args.gateway_only, args.senders)
        report["gateway_process"] = {
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "note": "peak RSS of this process: the gateway and the in-process functions"
            + ("" if args.moto == "process" else " and the moto server"),
        }
        report["machine_at_end"] = machine()
    finally:
        stop_stack(stack)
    json.dump(report, report_out, indent=2)
    print(file=report_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
