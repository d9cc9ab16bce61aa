"""Streaming incoming message bytes to S3 under ``staging/`` (SMTP DATA/BDAT, IMAP APPEND).

The gateway never holds a whole message: bytes are gathered into parts and each full
part is uploaded as one part of an S3 multipart upload. S3 wants every part but the last
to be at least 5 MiB (S3 User Guide, "Amazon S3 multipart upload limits"). A message
that never fills a part is written with one PutObject when it ends, so the common small
message costs one request, not three; and one within the upload's ``inline_limit`` is
not written at all: :meth:`StagingUpload.finish` hands its bytes back, for the caller to
send inline to the function (DESIGN.md contract 1: a size threshold decides).

An upload that fails, or that the caller abandons (client gone, message too large), is
aborted, so no parts linger; objects under ``staging/`` also expire after a day by a
lifecycle rule (template.yaml). boto3 blocks, so each request runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

STAGING_PREFIX = "staging/"
#: S3's minimum size of a part other than the last (5 MiB).
MIN_PART_SIZE = 5 * 1024 * 1024
#: S3 allows at most 10,000 parts; 5 MiB parts cover 48 GiB, far above any message limit.
MAX_PARTS = 10_000


@dataclass(frozen=True)
class StagedObject:
    """Where the bytes are: ``key`` in S3, or, for a message within the inline limit,
    ``data`` itself (``key`` is then "")."""

    key: str
    size: int
    data: bytes | None = None

    @property
    def inline(self) -> bool:
        return self.data is not None


def new_staging_key(label: str = "") -> str:
    """``staging/<label>-<random>``: unique, and traceable to a session in the logs."""
    token = uuid.uuid4().hex
    return f"{STAGING_PREFIX}{label}-{token}" if label else f"{STAGING_PREFIX}{token}"


class StagingUpload:
    """Write bytes with :meth:`write`, then :meth:`finish` (or :meth:`abort`).

    As an async context manager it aborts when the block raises or does not finish.
    """

    def __init__(
        self, s3: Any, bucket: str, key: str | None = None, part_size: int = MIN_PART_SIZE, inline_limit: int = 0
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError("S3 parts other than the last must be at least 5 MiB")
        if inline_limit > part_size:
            raise ValueError("the inline limit must not exceed a part")
        self.s3 = s3
        self.bucket = bucket
        self.key = key or new_staging_key()
        self.part_size = part_size
        self.inline_limit = inline_limit
        self.size = 0
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._done = False

    async def __aenter__(self) -> StagingUpload:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._done:
            await self.abort()

    async def write(self, data: bytes) -> None:
        """Append ``data``; uploads a part whenever one is full."""
        if self._done:
            raise RuntimeError("staging upload already finished")
        self._buffer += data
        self.size += len(data)
        while len(self._buffer) >= self.part_size:
            # Hand the full buffer to the upload and keep only the overhang: no copy of the part.
            part, self._buffer = self._buffer, self._buffer[self.part_size :]
            del part[self.part_size :]
            await self._upload_part(part)

    async def finish(self) -> StagedObject:
        """Make the object visible: one PutObject, or the last part and CompleteMultipartUpload;
        or, within the inline limit, no request: the bytes come back in the result."""
        if self._done:
            raise RuntimeError("staging upload already finished")
        if self._upload_id is None and self.inline_limit > 0 and self.size <= self.inline_limit:
            self._done = True
            data, self._buffer = bytes(self._buffer), bytearray()
            return StagedObject("", self.size, data)
        try:
            if self._upload_id is None:
                body, self._buffer = self._buffer, bytearray()
                await asyncio.to_thread(
                    self.s3.put_object, Bucket=self.bucket, Key=self.key, Body=body, ContentType="message/rfc822"
                )
            else:
                if self._buffer or not self._parts:
                    part, self._buffer = self._buffer, bytearray()
                    await self._upload_part(part)
                await asyncio.to_thread(
                    self.s3.complete_multipart_upload,
                    Bucket=self.bucket,
                    Key=self.key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": self._parts},
                )
        except BaseException:
            await self.abort()
            raise
        self._done = True
        return StagedObject(self.key, self.size)

    async def abort(self) -> None:
        """Drop what was written; never raises (the caller is already failing)."""
        self._done = True
        self._buffer = bytearray()
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is None:
            return
        try:
            await asyncio.to_thread(
                self.s3.abort_multipart_upload, Bucket=self.bucket, Key=self.key, UploadId=upload_id
            )
        except Exception as error:  # the lifecycle rule removes it later
            log.warning("staging %s: abort failed: %s", self.key, type(error).__name__)

    async def _upload_part(self, part: bytearray) -> None:
        try:
            if self._upload_id is None:
                reply = await asyncio.to_thread(
                    self.s3.create_multipart_upload, Bucket=self.bucket, Key=self.key, ContentType="message/rfc822"
                )
                self._upload_id = str(reply["UploadId"])
            number = len(self._parts) + 1
            if number > MAX_PARTS:
                raise ValueError("too many parts")
            reply = await asyncio.to_thread(
                self.s3.upload_part,
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=part,
            )
            self._parts.append({"PartNumber": number, "ETag": reply["ETag"]})
        except BaseException:
            await self.abort()
            raise
