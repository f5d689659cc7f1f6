"""Raw Kafka wire protocol helpers for the end-to-end tests.

Written from the Kafka protocol specification: request/response framing,
primitive types, CRC-32C, RecordBatch v2 encoding and decoding, and a few
non-flexible request versions that the tests send by hand (ApiVersions v0,
Metadata v1, Produce v3 and v8, Fetch v4, ListOffsets v1).  Nothing here depends on a
Kafka client library, so the tests can send bytes that no client would send.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Iterable, Optional

# --- API keys and error codes used by the tests ------------------------------

PRODUCE = 0
FETCH = 1
LIST_OFFSETS = 2
METADATA = 3
API_VERSIONS = 18
CREATE_TOPICS = 19

NONE = 0
OFFSET_OUT_OF_RANGE = 1
CORRUPT_MESSAGE = 2
UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_TOPIC_EXCEPTION = 17
UNSUPPORTED_VERSION = 35
INVALID_CONFIG = 40
INVALID_REQUEST = 42
INVALID_RECORD = 87

ERROR_NAMES = {
    0: "NONE",
    1: "OFFSET_OUT_OF_RANGE",
    2: "CORRUPT_MESSAGE",
    3: "UNKNOWN_TOPIC_OR_PARTITION",
    10: "MESSAGE_TOO_LARGE",
    17: "INVALID_TOPIC_EXCEPTION",
    35: "UNSUPPORTED_VERSION",
    40: "INVALID_CONFIG",
    42: "INVALID_REQUEST",
    87: "INVALID_RECORD",
}


def error_name(code: int) -> str:
    return f"{ERROR_NAMES.get(code, 'UNKNOWN')}({code})"


# --- CRC-32C (Castagnoli), table driven --------------------------------------

def _make_crc32c_table() -> list[int]:
    poly = 0x82F63B78  # reflected 0x1EDC6F41
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C_TABLE = _make_crc32c_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    crc ^= 0xFFFFFFFF
    table = _CRC32C_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# --- primitive encoders ------------------------------------------------------

def i8(v: int) -> bytes:
    return struct.pack(">b", v)


def i16(v: int) -> bytes:
    return struct.pack(">h", v)


def i32(v: int) -> bytes:
    return struct.pack(">i", v)


def u32(v: int) -> bytes:
    return struct.pack(">I", v)


def i64(v: int) -> bytes:
    return struct.pack(">q", v)


def string(s: Optional[str]) -> bytes:
    """STRING / NULLABLE_STRING: int16 length (-1 for null) + UTF-8 bytes."""
    if s is None:
        return i16(-1)
    b = s.encode()
    return i16(len(b)) + b


def kbytes(b: Optional[bytes]) -> bytes:
    """BYTES / NULLABLE_BYTES / RECORDS: int32 length (-1 for null) + bytes."""
    if b is None:
        return i32(-1)
    return i32(len(b)) + b


def array(items: Iterable[bytes]) -> bytes:
    items = list(items)
    return i32(len(items)) + b"".join(items)


def uvarint(v: int) -> bytes:
    if v < 0:
        raise ValueError("uvarint of a negative number")
    out = bytearray()
    while True:
        byte = v & 0x7F
        v >>= 7
        if v:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def varint(v: int) -> bytes:
    """Zig-zag varint (also used for varlong)."""
    return uvarint((v << 1) ^ (v >> 63))


# --- reader -----------------------------------------------------------------

class Reader:
    def __init__(self, data: bytes, pos: int = 0):
        self.data = data
        self.pos = pos

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError(f"short read: want {n} bytes at {self.pos}, have {self.remaining()}")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def _unpack(self, fmt: str):
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, self._take(size))[0]

    def i8(self) -> int:
        return self._unpack(">b")

    def i16(self) -> int:
        return self._unpack(">h")

    def i32(self) -> int:
        return self._unpack(">i")

    def u32(self) -> int:
        return self._unpack(">I")

    def i64(self) -> int:
        return self._unpack(">q")

    def string(self) -> Optional[str]:
        n = self.i16()
        return None if n < 0 else self._take(n).decode()

    def bytes(self) -> Optional[bytes]:
        n = self.i32()
        return None if n < 0 else self._take(n)

    def raw(self, n: int) -> bytes:
        return self._take(n)

    def array(self, item) -> list:
        n = self.i32()
        return [] if n < 0 else [item(self) for _ in range(n)]

    def uvarint(self) -> int:
        shift = 0
        value = 0
        while True:
            b = self._take(1)[0]
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise ValueError("varint too long")

    def varint(self) -> int:
        v = self.uvarint()
        return (v >> 1) ^ -(v & 1)


# --- RecordBatch v2 ----------------------------------------------------------

COMPRESSION_NAMES = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}
BATCH_HEADER_BYTES = 61  # baseOffset .. recordsCount
# offset of the CRC field and of the first byte it covers (attributes)
CRC_POS = 17
CRC_START = 21


@dataclass
class Record:
    key: Optional[bytes]
    value: Optional[bytes]
    headers: list = field(default_factory=list)  # [(str, bytes|None)]
    timestamp: Optional[int] = None  # absolute ms; None -> batch base timestamp
    offset: Optional[int] = None  # filled when decoding


def encode_record(rec: Record, offset_delta: int, timestamp_delta: int) -> bytes:
    body = bytearray()
    body += i8(0)  # attributes (unused)
    body += varint(timestamp_delta)
    body += varint(offset_delta)
    if rec.key is None:
        body += varint(-1)
    else:
        body += varint(len(rec.key)) + rec.key
    if rec.value is None:
        body += varint(-1)
    else:
        body += varint(len(rec.value)) + rec.value
    body += varint(len(rec.headers))
    for hk, hv in rec.headers:
        hkb = hk.encode()
        body += varint(len(hkb)) + hkb
        if hv is None:
            body += varint(-1)
        else:
            body += varint(len(hv)) + hv
    return varint(len(body)) + bytes(body)


def encode_batch(
    records: list[Record],
    base_offset: int = 0,
    base_timestamp: Optional[int] = None,
    attributes: int = 0,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    partition_leader_epoch: int = -1,
    records_count: Optional[int] = None,
    corrupt_crc: bool = False,
) -> bytes:
    """Encode an uncompressed RecordBatch v2.

    records_count overrides the count field (to make it lie); corrupt_crc
    stores a CRC that does not match the bytes.
    """
    if not records:
        raise ValueError("a batch needs at least one record")
    now = int(time.time() * 1000)
    stamps = [r.timestamp if r.timestamp is not None else (base_timestamp or now) for r in records]
    if base_timestamp is None:
        base_timestamp = stamps[0]
    body = b"".join(
        encode_record(r, i, ts - base_timestamp) for i, (r, ts) in enumerate(zip(records, stamps))
    )
    count = len(records) if records_count is None else records_count
    after_crc = (
        i16(attributes)
        + i32(len(records) - 1)  # lastOffsetDelta
        + i64(base_timestamp)
        + i64(max(stamps))
        + i64(producer_id)
        + i16(producer_epoch)
        + i32(base_sequence)
        + i32(count)
        + body
    )
    crc = crc32c(after_crc)
    if corrupt_crc:
        crc ^= 0xDEADBEEF
    # batchLength counts from partitionLeaderEpoch to the end
    batch_length = 4 + 1 + 4 + len(after_crc)
    return i64(base_offset) + i32(batch_length) + i32(partition_leader_epoch) + i8(2) + u32(crc) + after_crc


@dataclass
class BatchInfo:
    position: int  # byte position of the batch in the buffer / file
    size: int  # total bytes, 12 + batchLength
    base_offset: int
    last_offset_delta: int
    magic: int
    crc: int
    crc_ok: bool
    attributes: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    records_count: int

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def compression(self) -> str:
        return COMPRESSION_NAMES.get(self.attributes & 0x7, f"codec{self.attributes & 0x7}")


def scan_batches(data: bytes) -> tuple[list[BatchInfo], int]:
    """Walk RecordBatch v2 headers in data (a fetch response's records or a
    segment file).  Returns (complete batches, bytes left over at the end)."""
    batches = []
    pos = 0
    while len(data) - pos >= 12:
        base_offset, batch_length = struct.unpack_from(">qi", data, pos)
        size = 12 + batch_length
        if batch_length < BATCH_HEADER_BYTES - 12 or pos + size > len(data):
            break
        (leader_epoch, magic, crc, attributes, last_delta, base_ts, max_ts, pid, _epoch, _seq,
         count) = struct.unpack_from(">ibIhiqqqhii", data, pos + 12)
        crc_ok = crc32c(data[pos + CRC_START:pos + size]) == crc
        batches.append(BatchInfo(pos, size, base_offset, last_delta, magic, crc, crc_ok, attributes,
                                 base_ts, max_ts, pid, count))
        pos += size
    return batches, len(data) - pos


def decode_records(data: bytes, info: BatchInfo) -> list[Record]:
    """Decode the records of an uncompressed batch located by scan_batches."""
    if info.attributes & 0x7:
        raise ValueError(f"batch at {info.base_offset} is compressed ({info.compression})")
    r = Reader(data, info.position + BATCH_HEADER_BYTES)
    out = []
    for _ in range(info.records_count):
        length = r.varint()
        start = r.pos
        r.i8()
        ts_delta = r.varint()
        off_delta = r.varint()
        klen = r.varint()
        key = None if klen < 0 else r.raw(klen)
        vlen = r.varint()
        value = None if vlen < 0 else r.raw(vlen)
        headers = []
        for _h in range(r.varint()):
            hk = r.raw(r.varint()).decode()
            hvl = r.varint()
            headers.append((hk, None if hvl < 0 else r.raw(hvl)))
        if r.pos - start != length:
            raise ValueError(f"record length {length} != bytes read {r.pos - start}")
        out.append(Record(key, value, headers, info.base_timestamp + ts_delta, info.base_offset + off_delta))
    return out


# --- framing and connections ------------------------------------------------

def request_frame(api_key: int, api_version: int, correlation_id: int, body: bytes,
                  client_id: Optional[str] = "quiver-e2e") -> bytes:
    """A complete request: int32 size + request header v1 + body."""
    payload = i16(api_key) + i16(api_version) + i32(correlation_id) + string(client_id) + body
    return i32(len(payload)) + payload


class Conn:
    """A blocking TCP connection speaking length-prefixed Kafka frames."""

    def __init__(self, host: str, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self._corr = 0

    @classmethod
    def to(cls, bootstrap: str, timeout: float = 10.0) -> "Conn":
        host, port = bootstrap.rsplit(":", 1)
        return cls(host, int(port), timeout)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send_raw(self, data: bytes):
        self.sock.sendall(data)

    def recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)

    def recv_frame(self) -> bytes:
        (size,) = struct.unpack(">i", self.recv_exact(4))
        if size < 4 or size > 256 * 1024 * 1024:
            raise ValueError(f"implausible response size {size}")
        return self.recv_exact(size)

    def request(self, api_key: int, api_version: int, body: bytes) -> Reader:
        """Send one request and return a Reader positioned after the
        (v0) response header, having checked the correlation id."""
        self._corr += 1
        corr = self._corr
        self.send_raw(request_frame(api_key, api_version, corr, body))
        frame = self.recv_frame()
        r = Reader(frame)
        got = r.i32()
        if got != corr:
            raise ValueError(f"correlation id {got} != {corr}")
        return r

    def wait_closed(self, timeout: float = 10.0) -> bytes:
        """Read until the peer closes.  Returns whatever bytes arrived before
        the close; raises TimeoutError if the peer keeps the connection open."""
        deadline = time.monotonic() + timeout
        got = bytearray()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"peer kept the connection open for {timeout}s (received {len(got)} bytes)")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except (ConnectionResetError, BrokenPipeError):
                return bytes(got)
            if not chunk:
                return bytes(got)
            got += chunk


# --- typed requests ----------------------------------------------------------

@dataclass
class ApiVersionsResult:
    error_code: int
    ranges: dict  # api_key -> (min, max)


def api_versions(conn: Conn, version: int = 0) -> ApiVersionsResult:
    """ApiVersions with an empty v0-style body.  Versions >= 3 use a flexible
    body, so only call with 0..2 or with an unsupported version, to which a
    broker answers in the v0 response format."""
    r = conn.request(API_VERSIONS, version, b"")
    return parse_api_versions_v0(r)


def parse_api_versions_v0(r: Reader) -> ApiVersionsResult:
    err = r.i16()
    ranges = {}
    for key, lo, hi in r.array(lambda rr: (rr.i16(), rr.i16(), rr.i16())):
        ranges[key] = (lo, hi)
    return ApiVersionsResult(err, ranges)


@dataclass
class ProduceResult:
    topic: str
    partition: int
    error_code: int
    base_offset: int
    log_append_time: int


def produce_v3(conn: Conn, topic: str, partition: int, records: bytes, acks: int = -1,
               timeout_ms: int = 10000) -> ProduceResult:
    body = (
        string(None)  # transactional_id
        + i16(acks)
        + i32(timeout_ms)
        + array([string(topic) + array([i32(partition) + kbytes(records)])])
    )
    r = conn.request(PRODUCE, 3, body)
    results = []
    for name, parts in r.array(lambda rr: (rr.string(), rr.array(
            lambda p: (p.i32(), p.i16(), p.i64(), p.i64())))):
        for idx, err, base, lat in parts:
            results.append(ProduceResult(name, idx, err, base, lat))
    if len(results) != 1:
        raise ValueError(f"expected one partition response, got {results}")
    return results[0]


@dataclass
class PartitionProduced:
    partition: int
    error_code: int
    base_offset: int
    error_message: Optional[str]


def produce_v8(conn: Conn, topic: str, partitions: dict[int, bytes], acks: int = -1,
               timeout_ms: int = 10000) -> list[PartitionProduced]:
    """One request writing to several partitions of `topic`; the answer per partition
    carries the error message (v8+)."""
    body = (
        string(None)  # transactional_id
        + i16(acks)
        + i32(timeout_ms)
        + array([string(topic) + array([i32(p) + kbytes(records) for p, records in partitions.items()])])
    )
    r = conn.request(PRODUCE, 8, body)
    out = []
    for _ in range(r.i32()):
        r.string()
        for _p in range(r.i32()):
            index, err, base = r.i32(), r.i16(), r.i64()
            r.i64()  # log_append_time_ms
            r.i64()  # log_start_offset
            r.array(lambda e: (e.i32(), e.string()))  # record_errors
            out.append(PartitionProduced(index, err, base, r.string()))
    r.i32()  # throttle_time_ms
    return out


@dataclass
class FetchResult:
    error_code: int
    high_watermark: int
    last_stable_offset: int
    records: bytes


def fetch_v4(conn: Conn, topic: str, partition: int, offset: int, max_bytes: int = 1 << 20,
             max_wait_ms: int = 0) -> FetchResult:
    body = (
        i32(-1)  # replica_id
        + i32(max_wait_ms)
        + i32(1)  # min_bytes
        + i32(max_bytes)
        + i8(0)  # isolation_level READ_UNCOMMITTED
        + array([string(topic) + array([i32(partition) + i64(offset) + i32(max_bytes)])])
    )
    r = conn.request(FETCH, 4, body)
    r.i32()  # throttle_time_ms
    out = []
    for _ in range(r.i32()):
        r.string()
        for _p in range(r.i32()):
            r.i32()
            err = r.i16()
            hw = r.i64()
            lso = r.i64()
            r.array(lambda a: (a.i64(), a.i64()))
            recs = r.bytes() or b""
            out.append(FetchResult(err, hw, lso, recs))
    if len(out) != 1:
        raise ValueError(f"expected one partition in fetch response, got {len(out)}")
    return out[0]


EARLIEST = -2
LATEST = -1


def list_offsets_v1(conn: Conn, topic: str, partition: int, timestamp: int) -> tuple[int, int, int]:
    """Returns (error_code, timestamp, offset)."""
    body = i32(-1) + array([string(topic) + array([i32(partition) + i64(timestamp)])])
    r = conn.request(LIST_OFFSETS, 1, body)
    out = []
    for _ in range(r.i32()):
        r.string()
        for _p in range(r.i32()):
            r.i32()
            out.append((r.i16(), r.i64(), r.i64()))
    if len(out) != 1:
        raise ValueError(f"expected one partition in list_offsets response, got {out}")
    return out[0]


@dataclass
class TopicMeta:
    error_code: int
    name: str
    partitions: list  # [(error_code, partition_index)]


def metadata_v1(conn: Conn, topics: Optional[list[str]]) -> dict:
    """Metadata v1 (no auto-create flag: the broker's setting applies).
    topics=None asks for all topics."""
    body = i32(-1) if topics is None else array([string(t) for t in topics])
    r = conn.request(METADATA, 1, body)
    r.array(lambda b: (b.i32(), b.string(), b.i32(), b.string()))  # brokers
    r.i32()  # controller id
    out = {}
    for _ in range(r.i32()):
        err = r.i16()
        name = r.string()
        r.i8()  # is_internal
        parts = r.array(lambda p: (p.i16(), p.i32(), p.i32(), p.array(lambda a: a.i32()),
                                   p.array(lambda a: a.i32())))
        out[name] = TopicMeta(err, name, [(p[0], p[1]) for p in parts])
    return out


@dataclass
class PartitionMeta:
    error_code: int
    partition: int
    leader: int
    replicas: list
    isr: list


@dataclass
class BrokerMeta:
    node_id: int
    host: str
    port: int
    rack: Optional[str]


@dataclass
class Metadata:
    """A whole Metadata v1 answer: brokers, controller, topics with leaders, replicas, ISR."""
    brokers: dict  # node_id -> BrokerMeta
    controller_id: int
    topics: dict  # name -> (error_code, {partition: PartitionMeta})


def metadata_v1_full(conn: Conn, topics: Optional[list[str]] = None) -> Metadata:
    """Metadata v1, every field kept (what one broker believes about the cluster).
    topics=None asks for all topics."""
    body = i32(-1) if topics is None else array([string(t) for t in topics])
    r = conn.request(METADATA, 1, body)
    brokers = {}
    for node_id, host, port, rack in r.array(lambda b: (b.i32(), b.string(), b.i32(), b.string())):
        brokers[node_id] = BrokerMeta(node_id, host, port, rack)
    controller = r.i32()
    out = {}
    for _ in range(r.i32()):
        err = r.i16()
        name = r.string()
        r.i8()  # is_internal
        parts = r.array(lambda p: PartitionMeta(p.i16(), p.i32(), p.i32(), p.array(lambda a: a.i32()),
                                                p.array(lambda a: a.i32())))
        out[name] = (err, {p.partition: p for p in parts})
    return Metadata(brokers, controller, out)


def create_topics_v2(conn: Conn, name: str, partitions: int = 1, replication: int = 1,
                     configs: Optional[dict] = None, timeout_ms: int = 10000) -> tuple[int, Optional[str]]:
    """CreateTopics v2; returns (error_code, error_message) for the topic."""
    cfgs = array([string(k) + string(v) for k, v in (configs or {}).items()])
    topic = string(name) + i32(partitions) + i16(replication) + array([]) + cfgs
    body = array([topic]) + i32(timeout_ms) + i8(0)
    r = conn.request(CREATE_TOPICS, 2, body)
    r.i32()  # throttle
    res = r.array(lambda t: (t.string(), t.i16(), t.string()))
    if len(res) != 1:
        raise ValueError(f"expected one topic result, got {res}")
    return res[0][1], res[0][2]


# --- the Java client's default partitioner ----------------------------------

def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2), as a
    signed 32-bit int."""
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    rest = length % 4
    tail = length - rest
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def java_partition(key: bytes, partitions: int) -> int:
    """The partition the Java client's default partitioner picks for a key."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
