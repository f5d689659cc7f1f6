"""Self-test of the raw protocol helpers (no broker needed).

The record batches the bad-input tests send by hand must be exactly what a
Kafka client would send, so the encoder is checked against published CRC-32C
vectors and against an independent decoder (kafka-python's)."""

import struct

from kafka.record.default_records import DefaultRecordBatch

import kproto


def test_crc32c_known_vectors():
    assert kproto.crc32c(b"") == 0
    assert kproto.crc32c(b"123456789") == 0xE3069283
    assert kproto.crc32c(bytes(32)) == 0x8A9136AA
    assert kproto.crc32c(bytes([0xFF] * 32)) == 0x62A8AB43
    assert kproto.crc32c(bytes(range(32))) == 0x46DD794E
    # incremental use gives the same answer
    assert kproto.crc32c(b"6789", kproto.crc32c(b"12345")) == 0xE3069283


def test_varints_round_trip():
    for v, enc in [(0, b"\x00"), (-1, b"\x01"), (1, b"\x02"), (63, b"\x7e"), (-64, b"\x7f"), (64, b"\x80\x01")]:
        assert kproto.varint(v) == enc
        assert kproto.Reader(enc).varint() == v
    for v in [300, -300, 2**31 - 1, -(2**31), 2**62, -(2**63)]:
        assert kproto.Reader(kproto.varint(v)).varint() == v


def test_batch_encoding_matches_an_independent_decoder():
    recs = [
        kproto.Record(b"k0", b"value-0", [("h", b"x"), ("n", None)], 1_700_000_000_000),
        kproto.Record(None, b"value-1", [], 1_700_000_000_005),
        kproto.Record(b"k2", None, [("idx", b"2")], 1_699_999_999_990),
    ]
    raw = kproto.encode_batch(recs, base_offset=42)
    batch = DefaultRecordBatch(raw)
    assert batch.validate_crc()
    assert batch.base_offset == 42 and batch.magic == 2 and batch.records_count == 3
    assert batch.last_offset_delta == 2
    assert batch.max_timestamp == 1_700_000_000_005
    got = [(r.offset, r.key, r.value, list(r.headers), r.timestamp) for r in batch]
    assert got == [
        (42, b"k0", b"value-0", [("h", b"x"), ("n", None)], 1_700_000_000_000),
        (43, None, b"value-1", [], 1_700_000_000_005),
        (44, b"k2", None, [("idx", b"2")], 1_699_999_999_990),
    ]
    # our own scanner/decoder agrees
    infos, left = kproto.scan_batches(raw + raw[:30])
    assert left == 30 and len(infos) == 1 and infos[0].crc_ok and infos[0].size == len(raw)
    assert [(r.offset, r.key, r.value, r.headers, r.timestamp) for r in kproto.decode_records(raw, infos[0])] == got


def test_corrupted_and_lying_batches_are_what_they_claim():
    recs = [kproto.Record(b"k", b"v%d" % i, [], 1_700_000_000_000 + i) for i in range(5)]
    bad_crc = kproto.encode_batch(recs, corrupt_crc=True)
    assert not DefaultRecordBatch(bad_crc).validate_crc()
    lying = kproto.encode_batch(recs, records_count=6)
    assert DefaultRecordBatch(lying).validate_crc()  # CRC is valid, the count is not
    assert struct.unpack_from(">i", lying, 57)[0] == 6


def test_request_frame_layout():
    frame = kproto.request_frame(18, 0, 7, b"", client_id="c")
    assert frame == struct.pack(">ihhih", 11, 18, 0, 7, 1) + b"c"


def test_murmur2_matches_the_java_client():
    vectors = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    assert {k: kproto.murmur2(k) for k in vectors} == vectors
