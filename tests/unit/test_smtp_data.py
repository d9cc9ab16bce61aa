"""Receiving message data without sockets: dot-unstuffing, the end of data, bare line ends
(Postfix's "normalize"), BDAT chunks, the size limit, and the staging upload's use of S3
(parts of at least 5 MiB, one PutObject for small messages, abort on failure)."""

from __future__ import annotations

import asyncio
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.smtp.data import MessageSink, receive_chunk, receive_dot_stuffed
from gateway.staging import MIN_PART_SIZE, StagingUpload
from gateway.wire.dotstuff import stuff
from gateway.wire.lines import ConnectionClosed


class FakeS3:
    """Records the S3 calls of a staging upload and keeps what they would store."""

    def __init__(self, fail: str = "") -> None:
        self.calls: list[str] = []
        self.parts: dict[int, bytes] = {}
        self.objects: dict[str, bytes] = {}
        self.fail = fail

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name == self.fail:
            raise RuntimeError(f"{name} failed")

    def put_object(self, Bucket, Key, Body, ContentType):
        self._call("PutObject")
        self.objects[Key] = bytes(Body)

    def create_multipart_upload(self, Bucket, Key, ContentType):
        self._call("CreateMultipartUpload")
        return {"UploadId": "u1"}

    def upload_part(self, Bucket, Key, UploadId, PartNumber, Body):
        self._call("UploadPart")
        self.parts[PartNumber] = bytes(Body)
        return {"ETag": f'"{PartNumber}"'}

    def complete_multipart_upload(self, Bucket, Key, UploadId, MultipartUpload):
        self._call("CompleteMultipartUpload")
        numbers = [p["PartNumber"] for p in MultipartUpload["Parts"]]
        self.objects[Key] = b"".join(self.parts[n] for n in numbers)

    def abort_multipart_upload(self, Bucket, Key, UploadId):
        self._call("AbortMultipartUpload")


def reader_with(pieces: list[bytes], eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=2**16)
    for piece in pieces:
        reader.feed_data(piece)
    if eof:
        reader.feed_eof()
    return reader


async def receive(pieces: list[bytes], limit: int = 10**9, prefix: bytes = b"") -> tuple[MessageSink, FakeS3, bytes]:
    s3 = FakeS3()
    sink = MessageSink(StagingUpload(s3, "bucket", "staging/t"), limit, prefix)
    reader = reader_with(pieces)
    await receive_dot_stuffed(reader, sink, timeout=5)
    rest = await reader.read()
    if not sink.too_big:
        await sink.finish()
    return sink, s3, rest


# -- DATA (RFC 5321 §4.1.1.4, §4.5.2) --------------------------------------------------------------------

DATA_CASES = [
    pytest.param(b".\r\n", b"", id="empty-message"),
    pytest.param(b"a\r\nb\r\n.\r\n", b"a\r\nb\r\n", id="two-lines"),
    pytest.param(b"..\r\n...x\r\n.\r\n", b".\r\n..x\r\n", id="unstuffing-4.5.2"),
    pytest.param(b"a\nb\r\n.\r\n", b"a\r\nb\r\n", id="bare-LF-normalized"),
    pytest.param(b"a\rb\r\n.\r\n", b"a\rb\r\n", id="bare-CR-kept"),
    pytest.param(b"a\n.\nb\r\n.\r\n", b"a\r\n\r\nb\r\n", id="LF.LF-is-content"),
    pytest.param(b"a\r\n.\nb\r\n.\r\n", b"a\r\n\r\nb\r\n", id="CRLF.LF-is-content"),
    pytest.param(b"a\n.\r\nb\r\n.\r\n", b"a\r\n\r\nb\r\n", id="LF.CRLF-is-content"),
    pytest.param(b"a\r.\r\nb\r\n.\r\n", b"a\r.\r\nb\r\n", id="CR.CRLF-is-content"),
    pytest.param(b"\x00\xff\r\n.\r\n", b"\x00\xff\r\n", id="binary-octets"),
]


@pytest.mark.parametrize(("wire", "message"), DATA_CASES)
async def test_receive_dot_stuffed(wire, message):
    sink, s3, rest = await receive([wire + b"QUIT\r\n"])
    assert s3.objects["staging/t"] == message
    assert sink.size == len(message)
    assert rest == b"QUIT\r\n"  # commands after the data stay unread (RFC 2920 pipelining)


@settings(max_examples=200)
@given(
    lines=st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")), max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=1000), max_size=10),
)
async def test_stuffing_round_trips_however_the_bytes_arrive(lines, cuts):
    message = b"".join(line + b"\r\n" for line in lines)
    wire = stuff(message)
    positions = sorted({c % (len(wire) + 1) for c in cuts})
    pieces = [wire[a:b] for a, b in zip([0, *positions], [*positions, len(wire)], strict=True)]
    _, s3, rest = await receive(pieces)
    assert s3.objects["staging/t"] == message
    assert rest == b""


def stored_by_the_rules(wire: bytes) -> tuple[bytes, bytes]:
    """RFC 5321 §4.1.1.4 and §4.5.2 with Postfix's bare-LF "normalize", line by line:
    (the message as stored, the bytes after the end of the data)."""
    stored, position, previous_crlf = [], 0, True
    while True:
        end = wire.index(b"\n", position)
        line, position = wire[position : end + 1], end + 1
        crlf = line.endswith(b"\r\n")
        content = line[:-2] if crlf else line[:-1]
        if content == b"." and crlf and previous_crlf:
            return b"".join(stored), wire[position:]
        stored.append((content[1:] if content.startswith(b".") else content) + b"\r\n")
        previous_crlf = crlf


@settings(max_examples=300)
@given(
    body=st.lists(st.sampled_from([b".", b"\r", b"\n", b"a", b"\r\n", b".\r\n", b"\r\n.\r"]), max_size=60),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
    limit=st.integers(min_value=4, max_value=64),
)
async def test_reading_in_bulk_stores_what_the_rules_say_however_the_bytes_arrive(body, cuts, limit):
    # Dots, bare CRs and LFs, end-of-data look-alikes, lines longer than the reader's
    # buffer, any split into reads: the bytes stored and left unread are the rules' own.
    wire = b"".join(body) + b"\r\n.\r\nQUIT\r\n"
    positions = sorted({c % (len(wire) + 1) for c in cuts})
    reader = asyncio.StreamReader(limit=limit)
    s3 = FakeS3()
    sink = MessageSink(StagingUpload(s3, "bucket", "staging/t"), 10**9)

    async def arrive() -> None:
        for a, b in zip([0, *positions], [*positions, len(wire)], strict=True):
            reader.feed_data(wire[a:b])
            await asyncio.sleep(0)
        reader.feed_eof()

    feeding = asyncio.create_task(arrive())
    await receive_dot_stuffed(reader, sink, timeout=5)
    await feeding
    await sink.finish()
    stored, rest = stored_by_the_rules(wire)
    assert s3.objects["staging/t"] == stored
    assert await reader.read() == rest


async def test_lines_longer_than_the_reader_buffer_are_kept_and_cr_lf_across_reads_is_one_line_end():
    line = b"." + b"x" * (2**16 - 1) + b"\r"  # the CR is the last byte of the first read
    _, s3, _ = await receive([line, b"\ny\r\n.\r\n"])
    assert s3.objects["staging/t"] == line[1:-1] + b"\r\ny\r\n"


async def test_the_client_going_away_mid_data_is_connection_closed():
    sink = MessageSink(StagingUpload(FakeS3(), "bucket", "staging/t"), 10**6)
    with pytest.raises(ConnectionClosed):
        await receive_dot_stuffed(reader_with([b"Subject: x\r\n\r\nhalf"]), sink, timeout=5)


async def test_silence_mid_data_times_out():
    sink = MessageSink(StagingUpload(FakeS3(), "bucket", "staging/t"), 10**6)
    with pytest.raises(TimeoutError):
        await receive_dot_stuffed(reader_with([b"Subject: x\r\n"], eof=False), sink, timeout=0.05)


async def test_size_limit_counts_client_bytes_reads_to_the_end_and_stores_nothing():
    sink, s3, rest = await receive(
        [b"x" * 50 + b"\r\n" + b"y" * 50 + b"\r\n.\r\nNOOP\r\n"], limit=60, prefix=b"T: 1\r\n"
    )
    assert sink.too_big
    assert sink.size == 104
    assert rest == b"NOOP\r\n"
    assert s3.objects == {}


async def test_prefix_is_staged_but_neither_hashed_nor_counted():
    import hashlib

    sink, s3, _ = await receive([b"body\r\n.\r\n"], limit=6, prefix=b"Received: x\r\n")
    assert s3.objects["staging/t"] == b"Received: x\r\nbody\r\n"
    assert sink.size == 6
    assert sink.sha256 == hashlib.sha256(b"body\r\n").hexdigest()


# -- BDAT (RFC 3030 §2) ------------------------------------------------------------------------------------


async def test_receive_chunk_reads_exactly_its_size():
    s3 = FakeS3()
    sink = MessageSink(StagingUpload(s3, "bucket", "staging/t"), 10**6)
    reader = reader_with([b"ab\r\n.\r\n", b"\ncdBDAT 0 LAST\r\n"])
    await receive_chunk(reader, 10, sink, timeout=5)
    await sink.finish()
    assert s3.objects["staging/t"] == b"ab\r\n.\r\n\ncd"  # octets, no unstuffing, no normalizing
    assert await reader.read() == b"BDAT 0 LAST\r\n"


async def test_refused_chunk_is_read_and_dropped():
    reader = reader_with([b"x" * 100 + b"NOOP\r\n"])
    await receive_chunk(reader, 100, None, timeout=5)
    assert await reader.read() == b"NOOP\r\n"


async def test_short_chunk_is_connection_closed():
    with pytest.raises(ConnectionClosed):
        await receive_chunk(reader_with([b"abc"]), 10, None, timeout=5)


# -- staging (S3 multipart rules) -----------------------------------------------------------------------------


async def test_small_message_is_one_put():
    s3 = FakeS3()
    upload = StagingUpload(s3, "bucket", "staging/s")
    await upload.write(b"hello")
    staged = await upload.finish()
    assert (staged.key, staged.size) == ("staging/s", 5)
    assert s3.calls == ["PutObject"]


# (bytes written, inline limit, S3 requests, handed back inline) -- DESIGN.md contract 1
INLINE_CASES = [
    pytest.param(b"hello", 1024, [], True, id="within-the-limit-no-request"),
    pytest.param(b"x" * 1024, 1024, [], True, id="at-the-limit-still-inline"),
    pytest.param(b"x" * 1025, 1024, ["PutObject"], False, id="over-the-limit-one-put"),
    pytest.param(b"hello", 0, ["PutObject"], False, id="limit-0-always-staged"),
    pytest.param(b"", 0, ["PutObject"], False, id="limit-0-even-empty"),
]


@pytest.mark.parametrize(("data", "limit", "calls", "inline"), INLINE_CASES)
async def test_a_message_within_the_inline_limit_is_handed_back_not_staged(data, limit, calls, inline):
    s3 = FakeS3()
    upload = StagingUpload(s3, "bucket", "staging/i", inline_limit=limit)
    await upload.write(data)
    staged = await upload.finish()
    assert s3.calls == calls
    assert staged.inline is inline
    assert staged.size == len(data)
    if inline:
        assert (staged.key, staged.data) == ("", data)
    else:
        assert (staged.key, staged.data) == ("staging/i", None)
        assert s3.objects["staging/i"] == data


async def test_a_large_message_is_staged_in_parts_whatever_the_inline_limit():
    s3 = FakeS3()
    upload = StagingUpload(s3, "bucket", "staging/big", inline_limit=256 * 1024)
    for _ in range(6):
        await upload.write(b"x" * 1024 * 1024)
    staged = await upload.finish()
    assert not staged.inline
    assert s3.calls == ["CreateMultipartUpload", "UploadPart", "UploadPart", "CompleteMultipartUpload"]


def test_the_inline_limit_may_not_exceed_a_part():
    with pytest.raises(ValueError):
        StagingUpload(FakeS3(), "bucket", inline_limit=MIN_PART_SIZE + 1)


async def test_large_message_goes_in_parts_of_at_least_5_mib():
    s3 = FakeS3()
    upload = StagingUpload(s3, "bucket", "staging/l")
    data = bytes(range(256)) * (12 * 1024 * 1024 // 256 + 7)
    for start in range(0, len(data), 65536):
        await upload.write(data[start : start + 65536])
    await upload.finish()
    assert s3.calls == ["CreateMultipartUpload", "UploadPart", "UploadPart", "UploadPart", "CompleteMultipartUpload"]
    assert [len(p) for p in s3.parts.values()][:-1] == [MIN_PART_SIZE, MIN_PART_SIZE]
    assert s3.objects["staging/l"] == data


async def test_exactly_one_part_completes_without_an_empty_part():
    s3 = FakeS3()
    upload = StagingUpload(s3, "bucket", "staging/e")
    await upload.write(b"z" * MIN_PART_SIZE)
    await upload.finish()
    assert s3.calls == ["CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"]


@pytest.mark.parametrize("failing", ["UploadPart", "CompleteMultipartUpload"])
async def test_failed_multipart_upload_is_aborted(failing):
    s3 = FakeS3(fail=failing)
    upload = StagingUpload(s3, "bucket", "staging/f")
    with pytest.raises(RuntimeError):
        await upload.write(b"z" * (MIN_PART_SIZE + 1))
        await upload.finish()
    assert s3.calls[-1] == "AbortMultipartUpload"
    assert "staging/f" not in s3.objects


async def test_abandoned_upload_is_aborted_by_the_context_manager():
    s3 = FakeS3()
    with pytest.raises(ValueError, match="client left"):
        async with StagingUpload(s3, "bucket", "staging/c") as upload:
            await upload.write(b"z" * (MIN_PART_SIZE + 1))
            raise ValueError("client left")
    assert s3.calls == ["CreateMultipartUpload", "UploadPart", "AbortMultipartUpload"]


def test_parts_smaller_than_s3_allows_are_refused():
    with pytest.raises(ValueError):
        StagingUpload(FakeS3(), "bucket", part_size=MIN_PART_SIZE - 1)


def test_staging_keys_are_unique_and_under_the_prefix():
    keys = {StagingUpload(FakeS3(), "bucket").key for _ in range(100)}
    assert len(keys) == 100 and all(re.fullmatch(r"staging/[0-9a-f]{32}", k) for k in keys)
