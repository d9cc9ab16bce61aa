"""The gateway's reader of message blobs, with a bounded LRU cache shared by all sessions.

A blob is the bytes of one message in S3 at ``blobs/<sha256>`` (see
:mod:`mailcore.blobstore`). Blobs never change, so a cached copy never goes stale: the
cache needs no invalidation, only a bound (DESIGN.md contract 4). The gateway reads only
keys a function handed it, as a ``sha256`` in a result.

- Small blobs (up to ``item_limit``) are read whole, checked against their hash, kept in
  an LRU bounded in bytes, and a burst of sessions asking for the same blob at once makes
  one GetObject (the first read is shared).
- Larger blobs are streamed in chunks and never cached, so one big message cannot evict
  the working set or hold its whole size in memory per session.

boto3 blocks, so every S3 call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
from collections import OrderedDict
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger(__name__)

BLOB_PREFIX = "blobs/"
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: Defaults; ``BLOB_CACHE_BYTES``, ``BLOB_CACHE_ITEM_BYTES`` override them.
DEFAULT_CACHE_BYTES = 128 * 1024 * 1024
DEFAULT_ITEM_LIMIT = 4 * 1024 * 1024
CHUNK = 256 * 1024


class BlobUnavailable(Exception):
    """S3 could not answer now (a temporary failure)."""


class BlobMissing(Exception):
    """No such blob: the message was removed meanwhile (its last reference went)."""


class BlobCorrupt(Exception):
    """The bytes read do not hash to their key."""


def blob_key(sha256: str) -> str:
    if not _SHA256.fullmatch(sha256):
        raise BlobMissing(f"not a blob id: {sha256[:80]!r}")
    return f"{BLOB_PREFIX}{sha256}"


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    streamed: int = 0
    prefetches: int = 0


class _Services(Protocol):
    """What :meth:`BlobReader.shared` needs of a connection."""

    services: dict[str, Any]

    @property
    def config(self) -> Any: ...


@dataclass
class BlobReader:
    s3: Any
    bucket: str
    capacity: int = DEFAULT_CACHE_BYTES
    item_limit: int = DEFAULT_ITEM_LIMIT
    chunk_size: int = CHUNK
    stats: CacheStats = field(default_factory=CacheStats)
    _cache: OrderedDict[str, bytes] = field(default_factory=OrderedDict, repr=False)
    _cached_bytes: int = 0
    _loading: dict[str, asyncio.Future[bytes]] = field(default_factory=dict, repr=False)

    @classmethod
    def shared(cls, conn: _Services, env: Mapping[str, str] | None = None) -> BlobReader:
        """The one reader of this gateway (kept in ``conn.services["blobs"]``)."""
        reader = conn.services.get("blobs")
        if not isinstance(reader, BlobReader):
            env = os.environ if env is None else env
            reader = cls(
                conn.services["aws"].s3,
                conn.config.mail_bucket,
                capacity=int(env.get("BLOB_CACHE_BYTES", DEFAULT_CACHE_BYTES)),
                item_limit=int(env.get("BLOB_CACHE_ITEM_BYTES", DEFAULT_ITEM_LIMIT)),
            )
            conn.services["blobs"] = reader
        return reader

    @property
    def cached_bytes(self) -> int:
        return self._cached_bytes

    def cacheable(self, size: int) -> bool:
        return size <= self.item_limit and size <= self.capacity

    # -- whole blobs --------------------------------------------------------------

    async def read(self, sha256: str) -> bytes:
        """The whole blob, from the cache when there (one GetObject otherwise)."""
        cached = self._cache.get(sha256)
        if cached is not None:
            self._cache.move_to_end(sha256)
            self.stats.hits += 1
            return cached
        loading = self._loading.get(sha256)
        if loading is None:
            # A task of its own: a session that goes away does not cancel the others' read.
            self.stats.misses += 1
            loading = asyncio.ensure_future(self._load(sha256))
            loading.add_done_callback(_retrieve)
            self._loading[sha256] = loading
        return await asyncio.shield(loading)

    def prefetch(self, sha256: str) -> None:
        """Start reading a blob into the cache, if it is not there or on its way (read-ahead
        for clients that retrieve one message after another). Failures are left for a
        later :meth:`read` to meet."""
        if sha256 in self._cache or sha256 in self._loading:
            return
        self.stats.prefetches += 1
        loading = asyncio.ensure_future(self._load(sha256))
        loading.add_done_callback(_retrieve)
        self._loading[sha256] = loading

    async def _load(self, sha256: str) -> bytes:
        try:
            data = await asyncio.to_thread(self._get, sha256)
            if hashlib.sha256(data).hexdigest() != sha256:
                raise BlobCorrupt(f"blob {sha256} does not match its hash")
            self._remember(sha256, data)
            return data
        finally:
            del self._loading[sha256]

    def _remember(self, sha256: str, data: bytes) -> None:
        if not self.cacheable(len(data)) or sha256 in self._cache:
            return
        self._cache[sha256] = data
        self._cached_bytes += len(data)
        while self._cached_bytes > self.capacity:
            _, evicted = self._cache.popitem(last=False)
            self._cached_bytes -= len(evicted)
            self.stats.evictions += 1

    def _get(self, sha256: str) -> bytes:
        return bytes(self._open(sha256).read())

    def _open(self, sha256: str) -> Any:
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=blob_key(sha256))["Body"]
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise BlobMissing(sha256) from None
            raise BlobUnavailable(code or "ClientError") from error
        except BotoCoreError as error:
            raise BlobUnavailable(type(error).__name__) from error

    # -- streaming ----------------------------------------------------------------

    async def open(self, sha256: str, size: int) -> AsyncGenerator[bytes, None]:
        """The blob as chunks. The blob is found (or :class:`BlobMissing` raised) before
        this returns, so a caller can answer success first and stream after. Errors while
        streaming raise :class:`BlobUnavailable` from the iterator."""
        if sha256 in self._cache or self.cacheable(size):
            data = await self.read(sha256)
            return _single(data)
        self.stats.streamed += 1
        body = await asyncio.to_thread(self._open, sha256)
        return self._stream(body)

    async def _stream(self, body: Any) -> AsyncGenerator[bytes, None]:
        try:
            while True:
                try:
                    chunk = await asyncio.to_thread(body.read, self.chunk_size)
                except (BotoCoreError, OSError) as error:
                    raise BlobUnavailable(type(error).__name__) from error
                if not chunk:
                    return
                yield bytes(chunk)
        finally:
            await asyncio.to_thread(body.close)


async def _single(data: bytes) -> AsyncGenerator[bytes, None]:
    yield data


def _retrieve(task: asyncio.Future[bytes]) -> None:
    """Mark a failed load's error as seen: the sessions that awaited it got it already."""
    if not task.cancelled():
        task.exception()
