"""POP3 benchmark: RETR throughput and the AWS cost of a session, printed as JSON.

Starts the local stack (moto's server with template.yaml's resources, devstack.stack) and
the gateway in this process, with the functions in-process as ``make run`` does, then:

1. seeds 1,000 distinct messages of about 5 KB, split over N users (one maildrop each:
   POP3 locks a maildrop per session, so N connections need N maildrops);
2. RETR, one command at a time like fetchmail, over N client connections in N client
   processes: a cold pass (blobs read from S3) and hot passes (blobs in the gateway's
   cache), with AWS requests per message (``mailcore.accounting.count_requests``) and
   the function invocations that would be Lambda invokes in the cloud;
3. a 10,000-message maildrop: the AWS requests of login, STAT, UIDL and QUIT;
4. memory: the process's peak RSS and the blob cache's size.

Usage: ``.venv/bin/python bench/pop3_bench.py [--connections 4] [--messages 1000]
[--size 5000] [--hot-rounds 20] [--big 10000]``. The figures depend on the machine; the
gateway, moto and the clients share its cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import secrets
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "bench password"

# bench/ is on the path (the script's directory): the SMTP bench's helpers.
from smtp_bench import CountingTransport, machine, new_user, rss_kb  # noqa: E402

# -- the client (runs in its own process) -----------------------------------------------


class Pop3Client:
    """A minimal POP3 client on a socket: one command, one reply, like fetchmail."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()
        self.line()

    def _fill(self) -> None:
        chunk = self.sock.recv(262144)
        if not chunk:
            raise EOFError("server closed the connection")
        self.buffer += chunk

    def line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return line

    def multiline(self) -> int:
        """Read a multi-line body up to its terminator; the octets received."""
        start = 0
        while True:
            end = self.buffer.find(b"\r\n.\r\n", max(0, start - 4))
            if end >= 0 or self.buffer.startswith(b".\r\n"):
                break
            start = len(self.buffer)
            self._fill()
        if end < 0:
            del self.buffer[:3]
            return 0
        del self.buffer[: end + 5]
        return end + 2

    def command(self, text: str) -> bytes:
        self.sock.sendall(text.encode() + b"\r\n")
        reply = self.line()
        if not reply.startswith(b"+OK"):
            raise RuntimeError(f"{text.split()[0]}: {reply!r}")
        return reply

    def login(self, user: str) -> None:
        self.command(f"USER {user}")
        self.command(f"PASS {PASSWORD}")


def retr_client(
    address: tuple[str, int], user: str, count: int, rounds: int, ready: Any, go: Any, results: Any, finish: Any
) -> None:
    """Log in, wait for the start, RETR every message ``rounds`` times, report, then QUIT."""
    client = Pop3Client(address)
    client.login(user)
    ready.put(True)
    go.wait()
    octets = 0
    started = time.perf_counter()
    for _ in range(rounds):
        for n in range(1, count + 1):
            client.command(f"RETR {n}")
            octets += client.multiline()
    results.put({"user": user, "seconds": time.perf_counter() - started, "octets": octets})
    finish.wait()
    client.command("QUIT")


# -- the server side (this process) ---------------------------------------------------------


@dataclass
class Stack:
    local: Any
    info: Any
    store: Any
    gateway: Any
    loop: asyncio.AbstractEventLoop
    transport: Any

    def address(self) -> tuple[str, int]:
        return tuple(self.gateway.listening["pop3"])  # type: ignore[return-value]


def start_stack() -> Stack:
    from mailcore.settings import Settings
    from mailcore.store import Store

    from devstack.stack import LocalStack
    from gateway.config import LISTENERS, GatewayConfig
    from gateway.functions import FunctionClient, InProcessTransport
    from gateway.pop3.settings import Pop3Settings
    from gateway.server import Gateway

    local = LocalStack(port=0)
    info = local.start()
    os.environ.update(info.process_environment)
    store = Store.build(Settings.from_env(info.environment))
    transport = CountingTransport(InProcessTransport(info.functions))
    config = GatewayConfig(ports={name: 0 for name in LISTENERS}, hostname="bench.local", mail_bucket=info.resources["MailBucket"])
    gateway = Gateway(config, FunctionClient(transport), tls_dir=ROOT / ".local" / "bench-tls")
    gateway.services["pop3"] = Pop3Settings()
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="gateway", daemon=True).start()
    asyncio.run_coroutine_threadsafe(gateway.start(), loop).result(timeout=30)
    return Stack(local, info, store, gateway, loop, transport)


def stop_stack(stack: Stack) -> None:
    asyncio.run_coroutine_threadsafe(stack.gateway.stop(), stack.loop).result(timeout=30)
    stack.loop.call_soon_threadsafe(stack.loop.stop)
    stack.local.stop()


def make_message(n: int, size: int) -> bytes:
    header = (
        f"From: Sender {n} <sender{n}@example.org>\r\nTo: bench@example.test\r\n"
        f"Subject: benchmark message {n}\r\nMessage-ID: <bench-{n}-{secrets.token_hex(6)}@example.org>\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog; a line of a benchmark body.\r\n"
    body = b""
    while len(header) + len(body) + len(line) <= size:
        body += line
    return header + body


def seed(store: Any, user: str, raws: list[bytes]) -> None:
    """Index ``raws`` in the user's INBOX with the items a delivery writes, in bulk.

    Blobs go to S3 once per distinct content. The index items come from the library's own
    builders but are written with BatchWriteItem, not one transaction per 32 messages:
    moto deep-copies a table for every action of a TransactWriteItems, so seeding
    thousands of messages transactionally would take minutes on the emulator.
    """
    from collections import Counter as Tally

    from mailcore.messages import NewMessage
    from mailcore.mime import analyze

    metas: dict[bytes, tuple[str, dict[str, Any]]] = {}
    news = []
    for raw in raws:
        if raw not in metas:
            metas[raw] = (store.blobs.put(raw), analyze(raw).to_item())
        sha, meta = metas[raw]
        news.append(NewMessage(sha, len(raw), meta, [], int(time.time())))
    alloc = store.mailboxes.allocate(user, "INBOX", len(news))
    now = int(time.time())
    items = [
        action["Put"]["Item"]
        for i, m in enumerate(news)
        for action in store.messages._put_actions(alloc, alloc.first_uid + i, m, now)
    ]
    for start in range(0, len(items), 25):
        request = {store.messages.table: [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]}
        while request:
            request = store.messages.dynamodb.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}
    updates = [store.mailboxes.counts_action(alloc.mailbox, len(news), len(news))["Update"]]
    updates += [store.blobs.add_refs_action(sha, n)["Update"] for sha, n in Tally(m.sha256 for m in news).items()]
    for update in updates:
        store.mailboxes.dynamodb.update_item(**update)


def retr_benchmark(stack: Stack, domain: str, connections: int, messages: int, size: int, hot_rounds: int) -> dict[str, Any]:
    from mailcore.accounting import count_requests

    raws = [make_message(n, size) for n in range(messages)]
    users = [new_user(stack.store, domain, f"retr{i}") for i in range(connections)]
    shares = [raws[i::connections] for i in range(connections)]
    for user, share in zip(users, shares, strict=True):
        seed(stack.store, user, share)

    def run(rounds: int) -> dict[str, Any]:
        ctx = multiprocessing.get_context("spawn")
        ready, results, go, finish = ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Event()
        procs = [
            ctx.Process(target=retr_client, args=(stack.address(), user, len(share), rounds, ready, go, results, finish))
            for user, share in zip(users, shares, strict=True)
        ]
        stack.transport.take()
        with count_requests() as login_requests:
            for p in procs:
                p.start()
            for _ in procs:
                ready.get(timeout=120)
        login_invokes = stack.transport.take()
        with count_requests() as retr_requests:
            started = time.perf_counter()
            go.set()
            outcome = [results.get(timeout=600) for _ in procs]
            elapsed = time.perf_counter() - started
        retr_invokes = stack.transport.take()
        with count_requests() as quit_requests:
            finish.set()
            for p in procs:
                p.join(timeout=60)
        retrs = messages * rounds
        return {
            "rounds": rounds,
            "retrs": retrs,
            "seconds": round(elapsed, 3),
            "messages_per_second": round(retrs / elapsed),
            "mb_per_second": round(sum(o["octets"] for o in outcome) / elapsed / 1e6, 1),
            "aws_requests": retr_requests.snapshot(),
            "aws_requests_per_message": round(retr_requests.total / retrs, 4),
            "function_invocations": retr_invokes,
            "login_aws_requests_per_session": {k: v / connections for k, v in login_requests.snapshot().items()},
            "login_function_invocations_per_session": {k: v / connections for k, v in login_invokes.items()},
            "quit_aws_requests_per_session": {k: v / connections for k, v in quit_requests.snapshot().items()},
            "quit_function_invocations_per_session": {k: v / connections for k, v in stack.transport.take().items()},
        }

    cold = run(1)
    hot = run(hot_rounds)
    blobs = stack.gateway.services["blobs"]
    return {
        "connections": connections,
        "messages": messages,
        "message_octets_avg": round(sum(map(len, raws)) / len(raws)),
        "cold": cold,
        "hot": hot,
        "blob_cache": {
            "bytes": blobs.cached_bytes,
            "hits": blobs.stats.hits,
            "misses": blobs.stats.misses,
            "prefetches": blobs.stats.prefetches,
        },
    }


def big_maildrop_benchmark(stack: Stack, domain: str, count: int, size: int) -> dict[str, Any]:
    """STAT and UIDL on a large maildrop: their AWS requests, step by step."""
    from mailcore.accounting import count_requests

    user = new_user(stack.store, domain, "big")
    distinct = [make_message(n, size) for n in range(20)]  # index entries share 20 blobs
    started = time.perf_counter()
    seed(stack.store, user, [distinct[n % len(distinct)] for n in range(count)])
    seeded_s = time.perf_counter() - started
    client = Pop3Client(stack.address())
    steps: dict[str, Any] = {}
    stack.transport.take()
    for name, action in (
        ("login", lambda: client.login(user)),
        ("STAT", lambda: client.command("STAT")),
        ("UIDL", lambda: (client.command("UIDL"), client.multiline())),
        ("LIST", lambda: (client.command("LIST"), client.multiline())),
        ("QUIT", lambda: client.command("QUIT")),
    ):
        with count_requests() as requests:
            t = time.perf_counter()
            action()
            ms = (time.perf_counter() - t) * 1000
        steps[name] = {"ms": round(ms, 1), "aws_requests": requests.snapshot(), "function_invocations": stack.transport.take()}
    stat_uidl = sum(sum(steps[s]["aws_requests"].values()) for s in ("login", "STAT", "UIDL"))
    return {
        "messages": count,
        "seed_seconds": round(seeded_s, 1),
        "steps": steps,
        "aws_requests_login_stat_uidl": stat_uidl,
        "aws_requests_stat_uidl_after_login": sum(sum(steps[s]["aws_requests"].values()) for s in ("STAT", "UIDL")),
    }


def current_rss_mb() -> float:
    return round(rss_kb() / 1024, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="POP3 benchmark on the local stack")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--size", type=int, default=5000)
    parser.add_argument("--hot-rounds", type=int, default=20)
    parser.add_argument("--big", type=int, default=10000, help="messages in the STAT/UIDL maildrop (0: skip)")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    stack = start_stack()
    try:
        domain = stack.store.accounts.add_domain(f"bench{secrets.token_hex(3)}.test")
        rss_before = current_rss_mb()
        report: dict[str, Any] = {
            "machine": machine(),
            "retr": retr_benchmark(stack, domain, args.connections, args.messages, args.size, args.hot_rounds),
        }
        rss_after = current_rss_mb()
        if args.big:
            report["stat_uidl"] = big_maildrop_benchmark(stack, domain, args.big, args.size)
        report["memory"] = {
            "rss_before_retr_mb": rss_before,
            "rss_after_retr_mb": rss_after,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "blob_cache_mb": round(stack.gateway.services["blobs"].cached_bytes / 1e6, 1),
            "note": "peak RSS of this process: gateway, in-process functions and the moto server",
        }
    finally:
        stop_stack(stack)
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
