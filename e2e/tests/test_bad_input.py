"""Hostile and broken input on raw sockets. The broker must answer or drop the bad
connection, never crash, never hang other clients; a corrupt record batch must be
rejected with CORRUPT_MESSAGE and leave the log untouched."""

import struct
import time

import pytest

from harness import kproto
from harness.clients import Consumer, create_topic, produce, read_partition, unique, watermarks
from harness.kproto import RawConn

UNSUPPORTED_VERSION = 35
CORRUPT_MESSAGE = 2
CLOSE_TIMEOUT = 10.0


def _still_serving(broker):
    assert broker.alive(), f"{broker.target} process is gone\n{broker.log_tail()}"
    apis = kproto.api_versions_probe(broker.host, broker.port, timeout=5)
    assert 18 in apis and 0 in apis and 1 in apis and 3 in apis, apis


def _closed_or_error(conn, correlation_id, what):
    """A bad request must make the broker either close the connection or answer it
    (correlation id echoed); silently keeping the request pending is a failure."""
    kind, payload = conn.outcome(CLOSE_TIMEOUT)
    if kind == "open":
        pytest.fail(f"{what}: no response and connection still open after {CLOSE_TIMEOUT}s")
    if kind == "response":
        (cid,) = struct.unpack(">i", payload[:4])
        assert cid == correlation_id, f"{what}: response with correlation id {cid}, sent {correlation_id}"
    return kind, payload


def test_garbage_frame_is_rejected(broker):
    with RawConn(broker.host, broker.port) as c:
        c.send_frame(b"\xde\xad\xbe\xef" * 8)
        _closed_or_error(c, struct.unpack(">i", b"\xde\xad\xbe\xef")[0], "garbage frame")
    # Not even a length prefix: an HTTP request (its first 4 bytes read as a ~1.2 GB size).
    with RawConn(broker.host, broker.port) as c:
        c.send(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        kind, _ = c.outcome(CLOSE_TIMEOUT)
        assert kind == "closed", f"HTTP bytes on the Kafka port: connection {kind}, expected closed"
    _still_serving(broker)


@pytest.mark.parametrize("size", [2**31 - 1, 200 * 1024 * 1024, -1, -(2**31)])
def test_absurd_size_prefix_closes_connection(broker, size):
    rss0 = broker.rss_bytes()
    with RawConn(broker.host, broker.port) as c:
        c.send(struct.pack(">i", size) + b"\x00\x12\x00\x00")
        kind, _ = c.outcome(CLOSE_TIMEOUT)
        assert kind == "closed", f"size prefix {size}: connection {kind} after {CLOSE_TIMEOUT}s, expected closed"
    _still_serving(broker)
    rss1 = broker.rss_bytes()
    if broker.target == "fjord" and rss0 and rss1:
        assert rss1 - rss0 < 256 * 1024 * 1024, f"RSS grew {rss0} -> {rss1} after a size prefix of {size}"


def test_unknown_api_key(broker):
    with RawConn(broker.host, broker.port) as c:
        c.send_frame(kproto.header_v1(9999, 0, 4242) + b"\x00" * 8)
        _closed_or_error(c, 4242, "unknown api key 9999")
    _still_serving(broker)


def test_unsupported_metadata_version(broker):
    with RawConn(broker.host, broker.port) as c:
        apis = kproto.parse_api_versions_v0_response(c.request(kproto.api_versions_v0_request(1)))[2]
        max_md = apis[kproto.API_METADATA][1]
        bad = max_md + 100
        # Shaped like a flexible Metadata request: header v2, empty compact topic array, flags.
        body = kproto.uvarint(1) + b"\x01\x00\x00" + kproto.uvarint(0)
        c.send_frame(kproto.header_v2(kproto.API_METADATA, bad, 77) + body)
        kind, payload = _closed_or_error(c, 77, f"Metadata v{bad}")
        if kind == "response":
            assert struct.pack(">h", UNSUPPORTED_VERSION) in payload, (
                f"Metadata v{bad} answered without UNSUPPORTED_VERSION: {payload[:64].hex()}"
            )
    _still_serving(broker)


def test_api_versions_unknown_version_gets_v0_fallback(broker):
    """KIP-511: an ApiVersions request at a version the broker doesn't know gets an
    ApiVersions *v0* response with UNSUPPORTED_VERSION and (at least) its own version range."""
    with RawConn(broker.host, broker.port) as c:
        c.send_frame(kproto.api_versions_flexible_request(127, 31337))
        kind, payload = c.outcome(CLOSE_TIMEOUT)
        assert kind == "response", f"ApiVersions v127: connection {kind}, expected a v0 response"
        cid, err, apis = kproto.parse_api_versions_v0_response(payload)
        assert cid == 31337
        assert err == UNSUPPORTED_VERSION, f"error_code {err}, expected {UNSUPPORTED_VERSION}"
        assert kproto.API_API_VERSIONS in apis, apis
        lo, hi = apis[kproto.API_API_VERSIONS]
        assert lo == 0 and hi >= 3, f"ApiVersions range {lo}..{hi}"
        # Kafka lists just ApiVersions itself here (enough for the client to retry with a
        # version in range); listing every api is allowed too.
        # The connection stays usable: a supported version works afterwards.
        cid, err, apis2 = kproto.parse_api_versions_v0_response(c.request(kproto.api_versions_v0_request(2)))
        assert (cid, err) == (2, 0), (cid, err)
        for key in (0, 1, 3, 8, 9, 10, 11, 12, 14, 18):  # produce, fetch, metadata, groups, ...
            assert key in apis2, f"api key {key} missing from ApiVersions v0: {sorted(apis2)}"
        assert apis2[18] == apis[18], f"ApiVersions range differs: fallback {apis[18]}, v0 {apis2[18]}"
    _still_serving(broker)


def _raw_produce(broker, topic, batch, cid):
    with RawConn(broker.host, broker.port) as c:
        c.send_frame(kproto.produce_v3_request(cid, topic, 0, batch))
        kind, payload = c.outcome(30)
        assert kind == "response", f"Produce v3: connection {kind}, expected a response"
        rcid, results, _ = kproto.parse_produce_v3_response(payload)
        assert rcid == cid
        assert len(results) == 1 and results[0][:2] == (topic, 0), results
        return results[0][2], results[0][3]


def test_corrupt_record_batch_is_rejected_and_not_stored(broker):
    topic = create_topic(broker.bootstrap, unique("corrupt"), 1)
    good = kproto.record_batch([b"first valid record"])
    values = [f"value {i}".encode() for i in range(5)]
    batch = kproto.record_batch(values, keys=[b"k"] * 5)

    corruptions = {
        "flipped value bytes": lambda b: b[:-6] + bytes(x ^ 0xFF for x in b[-6:-2]) + b[-2:],
        "flipped record byte": lambda b: (
            b[: kproto.BATCH_RECORDS_OFFSET + 3]
            + bytes([b[kproto.BATCH_RECORDS_OFFSET + 3] ^ 0x01])
            + b[kproto.BATCH_RECORDS_OFFSET + 4 :]
        ),
        "flipped crc": lambda b: (
            b[: kproto.BATCH_CRC_OFFSET]
            + bytes(x ^ 0x5A for x in b[kproto.BATCH_CRC_OFFSET : kproto.BATCH_CRC_OFFSET + 4])
            + b[kproto.BATCH_CRC_OFFSET + 4 :]
        ),
    }
    before = watermarks(broker.bootstrap, topic, 0)
    assert before == (0, 0)
    for i, (name, corrupt) in enumerate(corruptions.items()):
        bad = corrupt(batch)
        assert bad != batch and len(bad) == len(batch)
        err, _ = _raw_produce(broker, topic, bad, 100 + i)
        assert err == CORRUPT_MESSAGE, f"{name}: error_code {err}, expected CORRUPT_MESSAGE ({CORRUPT_MESSAGE})"
        assert watermarks(broker.bootstrap, topic, 0) == before, f"{name}: the corrupt batch changed the log"

    # The hand-built encoder is right: the same batch uncorrupted is accepted and readable.
    err, base = _raw_produce(broker, topic, good, 200)
    assert (err, base) == (0, 0), f"valid batch: error_code {err}, base_offset {base}"
    err, base = _raw_produce(broker, topic, batch, 201)
    assert (err, base) == (0, 1), f"valid batch: error_code {err}, base_offset {base}"
    assert watermarks(broker.bootstrap, topic, 0) == (0, 6)
    got = read_partition(broker.bootstrap, topic, 0, 0, 6)
    assert [v for _, v in got] == [b"first valid record"] + values


def test_bad_connections_do_not_block_other_clients(broker):
    bad = []
    try:
        # Half a frame, then silence.
        c = RawConn(broker.host, broker.port)
        c.send(struct.pack(">i", 100) + kproto.header_v1(18, 0, 1)[:6])
        bad.append(c)
        # Connected and idle, never sending anything.
        bad.append(RawConn(broker.host, broker.port))
        # A huge announced size that is never sent (may be closed by the broker: fine).
        c = RawConn(broker.host, broker.port)
        c.send(struct.pack(">i", 50 * 1024 * 1024) + b"\x00" * 1000)
        bad.append(c)

        # A slow client: one ApiVersions request, a byte at a time.
        with RawConn(broker.host, broker.port, timeout=30) as slow:
            for b in kproto.frame(kproto.api_versions_v0_request(555)):
                slow.send(bytes([b]))
                time.sleep(0.02)
            cid, err, apis = kproto.parse_api_versions_v0_response(slow.recv_frame(10))
            assert (cid, err) == (555, 0) and 18 in apis

        # Meanwhile a real client produces and consumes.
        topic = create_topic(broker.bootstrap, unique("meanwhile"), 2)
        delivered = produce(broker.bootstrap, topic, [f"m{i}" for i in range(200)])
        for p in range(2):
            n = sum(1 for q, _, _ in delivered if q == p)
            got = read_partition(broker.bootstrap, topic, p, 0, n)
            assert len(got) == n
        _still_serving(broker)
    finally:
        for c in bad:
            c.close()


def test_broker_healthy_after_bad_input(broker):
    """Runs last in this module: the process survived everything above and real clients work."""
    _still_serving(broker)
    topic = create_topic(broker.bootstrap, unique("after-bad"), 3)
    delivered = produce(broker.bootstrap, topic, [f"after {i}" for i in range(300)], keys=[f"k{i}" for i in range(300)])
    c = Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": unique("after-bad"), "auto.offset.reset": "earliest"}
    )
    c.subscribe([topic])
    got = set()
    deadline = time.monotonic() + 60
    while len(got) < 300 and time.monotonic() < deadline:
        for m in c.consume(500, timeout=0.5):
            if not m.error():
                got.add((m.partition(), m.offset(), m.value()))
    c.close()
    assert got == set(delivered), f"consumed {len(got)} of {len(delivered)}"
