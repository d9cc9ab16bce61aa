"""IMAP benchmark on the local stack; prints one JSON object.

- ``select_10k`` / ``fetch_flags_10k``: SELECT and ``FETCH 1:* (FLAGS)`` on a mailbox of
  10,000 messages: wall time and the AWS requests each made (S3, DynamoDB, ...; the
  functions run in this process, so every request is counted).
- ``fetch_bodies``: full-body FETCH (``UID FETCH 1:N BODY.PEEK[]``) of hot 5 KB messages
  over 4 connections (clients in separate processes, so they do not share the gateway's
  interpreter lock), messages per second after one warm-up pass.
- ``append``: APPEND of 5 KB messages over one connection (LITERAL+), messages per second
  and AWS requests per APPEND.
- ``idle_1000``: resident memory the gateway process gains with 1,000 connections that
  logged in, selected INBOX and are in IDLE (20 users, 50 sessions each). The bench
  answers repeated logins of the same credentials from a memo instead of re-running
  Argon2 each time (0.2 s of CPU per login here); the sessions are otherwise real.

Targets (issue 4): FETCH 1:* (FLAGS) on 10k in <= 10 AWS requests and < 1 s; full-body
FETCH >= 5,000 msg/s hot over 4 connections; 1,000 idle connections < 100 MB.

Run: ``.venv/bin/python bench/imap_bench.py`` (``--quick`` for smaller numbers).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import multiprocessing
import os
import resource
import secrets
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "layers" / "mailcore"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

PASSWORD = "bench password"


# -- a minimal, fast IMAP client (runs in worker processes too) ----------------------------


class Client:
    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=120)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.buf = bytearray()
        self.pos = 0
        self.n = 0
        self._line()  # greeting

    def _fill(self) -> None:
        if self.pos > 1 << 20:
            del self.buf[: self.pos]
            self.pos = 0
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("closed")
        self.buf += chunk

    def _line(self) -> bytes:
        while True:
            end = self.buf.find(b"\r\n", self.pos)
            if end >= 0:
                line = bytes(self.buf[self.pos : end])
                self.pos = end + 2
                return line
            self._fill()

    def _skip(self, size: int) -> None:
        while len(self.buf) - self.pos < size:
            self._fill()
        self.pos += size

    def command(self, text: bytes) -> tuple[list[bytes], int]:
        """Send; return (untagged lines without literal contents, number of FETCH responses)."""
        self.n += 1
        tag = b"t%d" % self.n
        self.sock.sendall(tag + b" " + text + b"\r\n")
        lines: list[bytes] = []
        fetches = 0
        while True:
            line = self._line()
            if line.startswith(b"* ") and b" FETCH (" in line:
                fetches += 1
            while line.endswith(b"}"):
                size = int(line[line.rindex(b"{") + 1 : -1])
                self._skip(size)
                line = self._line()
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(line.decode(errors="replace"))
                return lines, fetches
            if len(lines) < 50 and b" FETCH (" not in line:
                lines.append(line)

    def send_only(self, text: bytes) -> None:
        self.sock.sendall(text)


def _fetch_worker(address: tuple[str, int], user: str, uids: int, rounds: int, start: Any, results: Any) -> None:
    client = Client(address)
    client.command(b'LOGIN "%s" "%s"' % (user.encode(), PASSWORD.encode()))
    client.command(b"EXAMINE Bodies")
    client.command(b"UID FETCH 1:%d BODY.PEEK[]" % uids)  # warm-up: the blob cache fills
    results.put(("ready", 0.0))
    start.wait()
    began = time.perf_counter()
    total = 0
    for _ in range(rounds):
        total += client.command(b"UID FETCH 1:%d BODY.PEEK[]" % uids)[1]
    results.put((total, time.perf_counter() - began))


# -- the stack and the gateway -----------------------------------------------------------------


class MemoTransport:
    """The in-process transport, with repeated identical logins answered from a memo."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.memo: dict[tuple[str, str], dict[str, Any]] = {}
        self.enabled = False

    def invoke(self, function: str, event: dict[str, Any]) -> dict[str, Any]:
        if self.enabled and function == "AuthFunction":
            key = (event.get("username", ""), event.get("password", ""))
            if key not in self.memo:
                self.memo[key] = self.inner.invoke(function, event)
            return self.memo[key]
        return self.inner.invoke(function, event)


def start(quick: bool) -> dict[str, Any]:
    from devstack.stack import LocalStack

    stack = LocalStack(port=0, stack_file=None)
    info = stack.start()
    os.environ.update(info.process_environment)

    from mailcore.settings import Settings
    from mailcore.store import Store

    from gateway.config import LISTENERS, GatewayConfig
    from gateway.connlimits import ConnectionLimits
    from gateway.functions import FunctionClient, InProcessTransport
    from gateway.imap.settings import ImapSettings
    from gateway.server import Gateway

    transport = MemoTransport(InProcessTransport(info.functions))
    # Every bench connection comes from 127.0.0.1, 50 idle sessions per user: no caps here.
    limits = ConnectionLimits(total=100_000, per_client=100_000, per_user=100_000)
    config = GatewayConfig(
        ports={n: 0 for n in LISTENERS}, hostname="bench.local", mail_bucket=info.resources["MailBucket"],
        connection_limits=limits,
    )
    gw = Gateway(config, FunctionClient(transport), tls_dir=Path(tempfile.mkdtemp()))
    gw.services["imap"] = ImapSettings(poll_interval=30.0, login_timeout=600.0)
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    asyncio.run_coroutine_threadsafe(gw.start(), loop).result(timeout=60)
    store = Store.build(Settings.from_env(info.environment))
    return {"stack": stack, "gateway": gw, "loop": loop, "store": store, "transport": transport, "quick": quick}


def message(n: int, size: int = 5000) -> bytes:
    head = (f"From: Sender {n} <sender{n}@example.org>\r\nTo: bench@example.test\r\nSubject: bench message {n}\r\n"
            f"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\nMessage-ID: <bench-{n}-{secrets.token_hex(4)}@example.org>\r\n\r\n")
    line = f"line of message {n} ".ljust(76, "x") + "\r\n"
    return (head + line * max(1, (size - len(head)) // len(line))).encode()


def seed(store: Any, user: str, mailbox: str, count: int, distinct: bool) -> None:
    """``count`` messages written straight into the index tables, item for item as
    :meth:`mailcore.messages.MessageIndex.append` writes them, with BatchWriteItem.

    (Seeding through ``append`` itself is what the APPEND benchmark measures; for 10,000
    messages it is too slow on moto, whose TransactWriteItems copies every table first.)
    """
    from mailcore import dynamo
    from mailcore.blobstore import ref_key
    from mailcore.mailboxes import mailbox_key
    from mailcore.messages import meta_pk
    from mailcore.mime import analyze

    box = store.mailboxes.create(user, mailbox) if mailbox != "INBOX" else store.mailboxes.get(user, mailbox)
    ddb = store.messages.dynamodb
    now = int(time.time())
    refs: dict[str, int] = {}
    items = []
    shared: tuple[str, int, str] | None = None
    for n in range(count):
        if distinct or shared is None:
            raw = message(n)
            shared = (store.blobs.put(raw), len(raw), json.dumps(analyze(raw).to_item(), separators=(",", ":")))
        sha, size, meta = shared
        refs[sha] = refs.get(sha, 0) + 1
        item = {"pk": box.mailbox_id, "uid": n + 1, "sha256": sha, "size": size, "internaldate": now,
                "modseq": n + 2, "flags": {"\\Seen"} if n % 3 == 0 else None}
        items.append({"PutRequest": {"Item": dynamo.serialize(item)}})
        meta_item = {"pk": meta_pk(box.mailbox_id), "uid": n + 1, "meta": meta}
        items.append({"PutRequest": {"Item": dynamo.serialize(meta_item)}})
    for start in range(0, len(items), 25):
        request = {store.messages.table: items[start : start + 25]}
        while request:
            request = ddb.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}
    for sha, n in refs.items():
        ddb.update_item(TableName=store.mailboxes.table, Key=dynamo.serialize(ref_key(sha)),
                        UpdateExpression="ADD refs :n", ExpressionAttributeValues=dynamo.values(n=n))
    unseen = count - len(range(0, count, 3))
    ddb.update_item(
        TableName=store.mailboxes.table, Key=dynamo.serialize(mailbox_key(user, mailbox)),
        UpdateExpression="SET uidnext = :u, highestmodseq = :m, messages = :c, unseen = :s",
        ExpressionAttributeValues=dynamo.values(u=count + 1, m=count + 1, c=count, s=unseen),
    )


def measure(command: Any) -> tuple[Any, float, dict[str, int]]:
    from mailcore.accounting import count_requests

    with count_requests() as counter:
        began = time.perf_counter()
        result = command()
        elapsed = time.perf_counter() - began
    return result, elapsed, counter.snapshot()


def bench_select_and_flags(env: dict[str, Any], user: str, size: int) -> dict[str, Any]:
    address = env["gateway"].listening["imap"]
    client = Client(address)
    client.command(b'LOGIN "%s" "%s"' % (user.encode(), PASSWORD.encode()))
    (lines, _), select_s, select_requests = measure(lambda: client.command(b"SELECT Big"))
    exists = next(int(line.split()[1]) for line in lines if line.endswith(b" EXISTS"))
    (_, fetched), flags_s, flags_requests = measure(lambda: client.command(b"FETCH 1:* (FLAGS)"))
    (_, fetched2), flags2_s, flags2_requests = measure(lambda: client.command(b"UID FETCH 1:* (FLAGS)"))
    (_, _), search_s, search_requests = measure(lambda: client.command(b"SEARCH UNSEEN"))
    (_, _), hsearch_s, hsearch_requests = measure(lambda: client.command(b"SEARCH SUBJECT \"message 9999\""))
    client.command(b"LOGOUT")
    return {
        "messages": exists,
        "select": {"seconds": round(select_s, 3), "aws_requests": sum(select_requests.values()), "by_operation": select_requests},
        "fetch_1_star_flags": {"seconds": round(flags_s, 3), "responses": fetched, "aws_requests": sum(flags_requests.values()),
                               "target_met": flags_s < 1.0 and sum(flags_requests.values()) <= 10},
        "uid_fetch_1_star_flags": {"seconds": round(flags2_s, 3), "responses": fetched2, "aws_requests": sum(flags2_requests.values())},
        "search_unseen": {"seconds": round(search_s, 3), "aws_requests": sum(search_requests.values())},
        "search_subject": {"seconds": round(hsearch_s, 3), "aws_requests": sum(hsearch_requests.values()),
                           "by_operation": hsearch_requests},
    }


def bench_body_fetch(env: dict[str, Any], user: str, count: int, rounds: int) -> dict[str, Any]:
    address = env["gateway"].listening["imap"]
    ctx = multiprocessing.get_context("spawn")
    start_event, results = ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=_fetch_worker, args=(address, user, count, rounds, start_event, results)) for _ in range(4)]
    for w in workers:
        w.start()
    for _ in workers:  # the warm-up passes: the blob cache then holds every message
        results.get(timeout=600)
    from mailcore.accounting import count_requests

    with count_requests() as counter:
        began = time.perf_counter()
        start_event.set()
        outcome = [results.get(timeout=600) for _ in workers]
        wall = time.perf_counter() - began
    for w in workers:
        w.join(timeout=30)
    total = sum(n for n, _ in outcome)
    rate = total / wall
    return {"connections": 4, "message_bytes": len(message(0)), "messages": total, "seconds": round(wall, 3),
            "messages_per_second": round(rate), "aws_requests": counter.total, "target_met": rate >= 5000}


def bench_append(env: dict[str, Any], user: str, count: int) -> dict[str, Any]:
    client = Client(env["gateway"].listening["imap"])
    client.command(b'LOGIN "%s" "%s"' % (user.encode(), PASSWORD.encode()))
    bodies = [message(100_000 + n) for n in range(count)]

    def run() -> None:
        for body in bodies:
            client.command(b"APPEND Appended {%d+}\r\n%s" % (len(body), body))

    client.command(b"CREATE Appended")
    _, elapsed, requests = measure(run)
    client.command(b"LOGOUT")
    return {"messages": count, "seconds": round(elapsed, 3), "messages_per_second": round(count / elapsed, 1),
            "aws_requests_per_append": round(sum(requests.values()) / count, 1), "by_operation": requests}


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def bench_idle(env: dict[str, Any], users: list[str], per_user: int) -> dict[str, Any]:
    env["transport"].enabled = True
    address = env["gateway"].listening["imap"]
    for u in users:  # one real login each fills the memo
        c = Client(address)
        c.command(b'LOGIN "%s" "%s"' % (u.encode(), PASSWORD.encode()))
        c.command(b"LOGOUT")
    gc.collect()
    before = rss_bytes()
    clients = []
    for u in users:
        for _ in range(per_user):
            c = Client(address)
            c.command(b'LOGIN "%s" "%s"' % (u.encode(), PASSWORD.encode()))
            c.command(b"SELECT INBOX")
            c.send_only(b"i IDLE\r\n")
            clients.append(c)
    for c in clients:
        assert c._line() == b"+ idling"
    from mailcore.accounting import count_requests

    watcher = env["gateway"].services["imap.shared"].watcher
    watcher.interval = 2.0  # the production default, for the cost of an idle minute
    env["loop"].call_soon_threadsafe(watcher._wake.set)  # end the wait begun with the long interval
    time.sleep(0.5)
    polls = watcher.stats.calls
    with count_requests(background=True) as counter:
        time.sleep(10)
    calls = watcher.stats.calls - polls
    gc.collect()
    after = rss_bytes()
    stats = {"poll_interval_s": 2.0, "function_calls_in_10s": calls, "aws_requests_in_10s": counter.snapshot(),
             "aws_requests_per_idle_minute": counter.total * 6}
    for c in clients:
        c.sock.close()
    added = after - before
    return {"connections": len(clients), "rss_added_mb": round(added / 2**20, 1),
            "kb_per_connection": round(added / len(clients) / 1024, 1), "watched_mailboxes": len(users),
            "watcher": stats, "target_met": added < 100 * 2**20}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="1,000 messages instead of 10,000 and fewer rounds")
    args = parser.parse_args()
    # 1,000 idle connections are 2,000 sockets in this process (clients and gateway).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 8192 if hard == resource.RLIM_INFINITY else min(hard, 8192)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    big = 1000 if args.quick else 10_000
    report: dict[str, Any] = {"benchmark": "imap", "quick": args.quick}
    # The in-process functions may print (Powertools EMF metrics): keep stdout for the JSON.
    with contextlib.redirect_stdout(sys.stderr):
        env = start(args.quick)
        store = env["store"]
        domain = store.accounts.add_domain(f"bench{secrets.token_hex(3)}.test")
        user = store.add_user(f"bench@{domain}", PASSWORD)
        # APPEND first, while moto's tables are small: its TransactWriteItems copies every
        # table, so later it would measure moto, not the gateway.
        report["append"] = bench_append(env, user, 30 if args.quick else 100)
        t = time.perf_counter()
        seed(store, user, "Big", big, distinct=False)
        seed(store, user, "Bodies", 500 if args.quick else 2000, distinct=True)
        report["seed_seconds"] = round(time.perf_counter() - t, 1)
        report[f"mailbox_{big}"] = bench_select_and_flags(env, user, big)
        report["fetch_bodies_hot"] = bench_body_fetch(env, user, 500 if args.quick else 2000, 2 if args.quick else 4)
        idle_users = [store.add_user(f"idle{n}@{domain}", PASSWORD) for n in range(4 if args.quick else 20)]
        report["idle_connections"] = bench_idle(env, idle_users, 50)
        asyncio.run_coroutine_threadsafe(env["gateway"].stop(), env["loop"]).result(timeout=60)
        env["stack"].stop()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
