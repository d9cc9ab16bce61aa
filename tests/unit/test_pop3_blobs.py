"""The gateway's blob reader (used by POP3 RETR/TOP): an LRU bounded in bytes, one read
shared by concurrent misses, integrity checked, large blobs streamed and never cached."""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading

import pytest
from botocore.exceptions import ClientError

from gateway.blobs import BlobCorrupt, BlobMissing, BlobReader, BlobUnavailable, blob_key
from gateway.pop3.settings import Pop3Settings


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakeS3:
    """get_object over a dict; counts requests; can be slowed down or made to fail."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.gets: list[str] = []
        self.gate: threading.Event | None = None
        self.error: str | None = None

    def get_object(self, Bucket: str, Key: str) -> dict:
        self.gets.append(Key)
        if self.gate is not None:
            self.gate.wait(5)
        if self.error:
            raise ClientError({"Error": {"Code": self.error}}, "GetObject")
        if Key not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey"}}, "GetObject")
        return {"Body": io.BytesIO(self.objects[Key])}


def reader_for(*blobs: bytes, **kwargs) -> tuple[BlobReader, FakeS3]:
    s3 = FakeS3({blob_key(sha(b)): b for b in blobs})
    return BlobReader(s3, "bucket", **kwargs), s3


async def test_second_read_is_a_cache_hit():
    data = b"x" * 100
    reader, s3 = reader_for(data)
    assert await reader.read(sha(data)) == data
    assert await reader.read(sha(data)) == data
    assert len(s3.gets) == 1 and (reader.stats.hits, reader.stats.misses) == (1, 1)


async def test_lru_is_bounded_in_bytes():
    a, b, c = b"a" * 40, b"b" * 40, b"c" * 40
    reader, s3 = reader_for(a, b, c, capacity=100)
    await reader.read(sha(a))
    await reader.read(sha(b))
    await reader.read(sha(a))  # a is now the most recent
    await reader.read(sha(c))  # evicts b
    assert reader.cached_bytes == 80 and reader.stats.evictions == 1
    s3.gets.clear()
    await reader.read(sha(a))
    await reader.read(sha(b))
    assert s3.gets == [blob_key(sha(b))]


async def test_concurrent_misses_share_one_read():
    data = b"shared"
    reader, s3 = reader_for(data)
    s3.gate = threading.Event()
    tasks = [asyncio.create_task(reader.read(sha(data))) for _ in range(5)]
    await asyncio.sleep(0.05)
    s3.gate.set()
    assert await asyncio.gather(*tasks) == [data] * 5
    assert len(s3.gets) == 1


async def test_missing_unavailable_corrupt():
    reader, s3 = reader_for()
    with pytest.raises(BlobMissing):
        await reader.read(sha(b"nothing"))
    with pytest.raises(BlobMissing):
        await reader.read("../../etc/passwd")  # only keys shaped like a SHA-256
    s3.objects[blob_key(sha(b"good"))] = b"evil"
    with pytest.raises(BlobCorrupt):
        await reader.read(sha(b"good"))
    assert reader.cached_bytes == 0
    s3.error = "SlowDown"
    with pytest.raises(BlobUnavailable):
        await reader.read(sha(b"good"))


async def test_large_blobs_stream_and_are_not_cached():
    data = bytes(range(256)) * 10
    reader, _s3 = reader_for(data, item_limit=1000, chunk_size=300)
    chunks = [c async for c in await reader.open(sha(data), len(data))]
    assert b"".join(chunks) == data and max(map(len, chunks)) == 300
    assert reader.cached_bytes == 0 and reader.stats.streamed == 1


@pytest.mark.parametrize(
    ("secure", "peer", "trust_loopback", "permitted"),
    [
        (True, "203.0.113.9", False, True),
        (False, "127.0.0.1", True, True),
        (False, "127.0.0.5", True, True),
        (False, "::1", True, True),
        (False, "::ffff:127.0.0.1", True, True),
        (False, "203.0.113.9", True, False),
        (False, "127.0.0.1", False, False),
        (False, "unknown", True, False),
    ],
)
def test_plaintext_policy(secure, peer, trust_loopback, permitted):
    # RFC 2595 §2.2, as Dovecot's disable_plaintext_auth applies it (local is secure).
    assert Pop3Settings(trust_loopback=trust_loopback).plaintext_permitted(secure, peer) is permitted


def test_settings_from_environment():
    settings = Pop3Settings.from_env({"POP3_IDLE_TIMEOUT": "900", "POP3_TRUST_LOOPBACK": "false", "POP3_MAX_BAD_COMMANDS": "4"})
    assert (settings.idle_timeout, settings.trust_loopback, settings.max_bad_commands) == (900.0, False, 4)
    assert Pop3Settings().idle_timeout >= 600  # RFC 1939 §3: at least 10 minutes


async def test_prefetch_fills_the_cache_once():
    data = b"next message"
    reader, s3 = reader_for(data)
    reader.prefetch(sha(data))
    reader.prefetch(sha(data))  # already on its way
    assert await reader.read(sha(data)) == data
    reader.prefetch(sha(data))  # already cached
    assert len(s3.gets) == 1 and reader.stats.prefetches == 1


async def test_a_failed_prefetch_is_met_by_the_next_read():
    reader, s3 = reader_for()
    reader.prefetch(sha(b"gone"))
    await asyncio.sleep(0.05)
    with pytest.raises(BlobMissing):
        await reader.read(sha(b"gone"))
    assert len(s3.gets) == 2
