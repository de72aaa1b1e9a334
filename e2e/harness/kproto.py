"""Hand-written Kafka wire protocol pieces for raw-socket tests.

Only what the acceptance tests need: request headers v1/v2, ApiVersions v0
(request and response, also the KIP-511 fallback response), SaslHandshake v0-v1 and
SaslAuthenticate v0-v2 with a SASL/PLAIN token, Metadata v1, Produce v3
(non-flexible) with a v2 record batch (optionally idempotent: producer id, epoch, base
sequence), InitProducerId v0, Fetch v4 with a parser of the v2 batches it returns, and a
pure-Python, table-driven CRC32C.
No third-party packages, so it also runs under any python3.
"""

import socket
import struct
import time

# ---------------------------------------------------------------------------
# CRC32C (Castagnoli), reflected polynomial 0x82F63B78, table driven.


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    table = _CRC32C_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283, "crc32c self-check failed"

# ---------------------------------------------------------------------------
# Primitive encoders


def uvarint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def varint(n):
    """Signed zig-zag varint (varlong-compatible for |n| < 2**63)."""
    return uvarint(((n << 1) ^ (n >> 63)) & 0xFFFFFFFFFFFFFFFF)


def kstring(s):
    """Nullable STRING: int16 length + bytes (-1 for null)."""
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">h", len(b)) + b


def compact_string(s):
    if s is None:
        return uvarint(0)
    b = s.encode() if isinstance(s, str) else s
    return uvarint(len(b) + 1) + b


def header_v1(api_key, api_version, correlation_id, client_id="fjord-e2e"):
    return struct.pack(">hhi", api_key, api_version, correlation_id) + kstring(client_id)


def header_v2(api_key, api_version, correlation_id, client_id="fjord-e2e"):
    return header_v1(api_key, api_version, correlation_id, client_id) + uvarint(0)


def frame(payload):
    return struct.pack(">i", len(payload)) + payload


# ---------------------------------------------------------------------------
# Requests

API_PRODUCE = 0
API_FETCH = 1
API_METADATA = 3
API_API_VERSIONS = 18
API_INIT_PRODUCER_ID = 22
API_END_TXN = 26


def api_versions_v0_request(correlation_id, client_id="fjord-e2e"):
    return header_v1(API_API_VERSIONS, 0, correlation_id, client_id)


def api_versions_flexible_request(version, correlation_id, client_id="fjord-e2e"):
    """ApiVersions at any (e.g. unknown, too high) version, shaped like v3+:
    header v2 and a body with client_software_name/version (KIP-511)."""
    body = compact_string("fjord-e2e") + compact_string("0.0.1") + uvarint(0)
    return header_v2(API_API_VERSIONS, version, correlation_id, client_id) + body


def parse_api_versions_v0_response(payload):
    """Returns (correlation_id, error_code, {api_key: (min, max)})."""
    cid, err, n = struct.unpack(">ihi", payload[:10])
    apis = {}
    for i in range(n):
        k, lo, hi = struct.unpack(">hhh", payload[10 + 6 * i : 16 + 6 * i])
        apis[k] = (lo, hi)
    return cid, err, apis


def record_batch(
    values,
    keys=None,
    timestamp_ms=None,
    base_offset=0,
    producer_id=-1,
    producer_epoch=-1,
    base_sequence=-1,
    transactional=False,
):
    """A magic-2 record batch (uncompressed) with a correct CRC32C. A value None is a null
    value (a tombstone). Without producer_id the batch is not idempotent (-1, -1, -1)."""
    ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    records = bytearray()
    for i, v in enumerate(values):
        v = v.encode() if isinstance(v, str) else v
        k = keys[i] if keys else None
        if isinstance(k, str):
            k = k.encode()
        body = bytes([0]) + varint(0) + varint(i)
        body += varint(-1) if k is None else varint(len(k)) + k
        body += varint(-1) if v is None else varint(len(v)) + v
        body += varint(0)  # no headers
        records += varint(len(body)) + body
    after_crc = struct.pack(
        ">hiqqqhii",
        0x10 if transactional else 0,  # attributes: no compression, CreateTime
        len(values) - 1,  # lastOffsetDelta
        ts,
        ts,  # baseTimestamp, maxTimestamp
        producer_id,
        producer_epoch,
        base_sequence,
        len(values),
    ) + bytes(records)
    after_length = struct.pack(">ibI", -1, 2, crc32c(after_crc)) + after_crc
    return struct.pack(">qi", base_offset, len(after_length)) + after_length


# Offsets inside a v2 batch (from the batch start).
BATCH_CRC_OFFSET = 8 + 4 + 4 + 1  # baseOffset, batchLength, leaderEpoch, magic
BATCH_RECORDS_OFFSET = BATCH_CRC_OFFSET + 4 + 2 + 4 + 8 + 8 + 8 + 2 + 4 + 4


def produce_v3_request(
    correlation_id, topic, partition, batch, acks=-1, timeout_ms=30000, client_id="fjord-e2e", transactional_id=None
):
    body = kstring(transactional_id)
    body += struct.pack(">hi", acks, timeout_ms)
    body += struct.pack(">i", 1) + kstring(topic)
    body += struct.pack(">i", 1) + struct.pack(">i", partition)
    body += struct.pack(">i", len(batch)) + batch
    return header_v1(API_PRODUCE, 3, correlation_id, client_id) + body


def produce_v12_request(
    correlation_id, topic, partition, batch, acks=-1, timeout_ms=30000, client_id="fjord-e2e", transactional_id=None
):
    """Produce v12, the first version of transaction version 2 (KIP-890): the broker adds a
    transactional batch's partition to its transaction."""
    body = compact_string(transactional_id) + struct.pack(">hi", acks, timeout_ms)
    body += uvarint(2) + compact_string(topic)
    body += uvarint(2) + struct.pack(">i", partition) + uvarint(len(batch) + 1) + batch + uvarint(0)
    body += uvarint(0) + uvarint(0)
    return header_v2(API_PRODUCE, 12, correlation_id, client_id) + body


def end_txn_v5_request(correlation_id, transactional_id, producer_id, producer_epoch, commit, client_id="fjord-e2e"):
    body = compact_string(transactional_id) + struct.pack(">qh?", producer_id, producer_epoch, commit) + uvarint(0)
    return header_v2(API_END_TXN, 5, correlation_id, client_id) + body


def init_producer_id_v0_request(
    correlation_id, transactional_id=None, transaction_timeout_ms=60000, client_id="fjord-e2e"
):
    body = kstring(transactional_id) + struct.pack(">i", transaction_timeout_ms)
    return header_v1(API_INIT_PRODUCER_ID, 0, correlation_id, client_id) + body


def fetch_v4_request(
    correlation_id,
    topic,
    partition,
    offset,
    max_bytes=8 * 1024 * 1024,
    max_wait_ms=0,
    isolation_level=0,
    client_id="fjord-e2e",
):
    """Fetch v4 (the oldest Kafka 4 accepts) of one partition, as a consumer (replica id -1)."""
    body = struct.pack(">iiiib", -1, max_wait_ms, 0, max_bytes, isolation_level)
    body += struct.pack(">i", 1) + kstring(topic)
    body += struct.pack(">i", 1) + struct.pack(">iqi", partition, offset, max_bytes)
    return header_v1(API_FETCH, 4, correlation_id, client_id) + body


class Reader:
    """Reads a response payload front to back."""

    def __init__(self, payload):
        self.buf, self.pos = payload, 0

    def take(self, fmt):
        vals = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return vals

    def int(self, fmt=">i"):
        return self.take(fmt)[0]

    def string(self):
        """An int16-length string (None when null)."""
        n = self.int(">h")
        if n < 0:
            return None
        self.pos += n
        return self.buf[self.pos - n : self.pos].decode()

    def int32s(self):
        n = self.int()
        return list(self.take(f">{n}i")) if n > 0 else []

    def bytes(self):
        """An int32-length BYTES (None when null)."""
        n = self.int()
        if n < 0:
            return None
        self.pos += n
        return bytes(self.buf[self.pos - n : self.pos])

    def compact_bytes(self):
        """A COMPACT_BYTES / COMPACT_NULLABLE_BYTES: uvarint length + 1 (0 is null)."""
        n = self.uvarint() - 1
        if n < 0:
            return None
        self.pos += n
        return bytes(self.buf[self.pos - n : self.pos])

    def compact_string(self):
        b = self.compact_bytes()
        return None if b is None else b.decode()

    def uvarint(self):
        shift = n = 0
        while True:
            b = self.buf[self.pos]
            self.pos += 1
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7

    def skip(self, n):
        self.pos += n


def parse_produce_v3_response(payload):
    """Returns (correlation_id, [(topic, partition, error_code, base_offset)], throttle_ms)."""
    r = Reader(payload)
    cid = r.int()
    out = []
    for _ in range(r.int()):
        name = r.string()
        for _ in range(r.int()):
            p, err, base, _append_time = r.take(">ihqq")
            out.append((name, p, err, base))
    return cid, out, r.int()


def parse_produce_v12_response(payload):
    """The error code of the first partition of a Produce v12 response."""
    r = Reader(payload)
    r.int()  # correlation id
    r.uvarint()  # response header tagged fields
    r.uvarint()  # topics + 1
    r.skip(r.uvarint() - 1)  # topic name
    r.uvarint()  # partitions + 1
    _partition, err = r.take(">ih")
    return err


def parse_end_txn_v5_response(payload):
    """Returns (error_code, producer_id, producer_epoch)."""
    r = Reader(payload)
    r.int()  # correlation id
    r.uvarint()  # response header tagged fields
    _throttle, err, pid, epoch = r.take(">ihqh")
    return err, pid, epoch


def parse_init_producer_id_v0_response(payload):
    """Returns (correlation_id, error_code, producer_id, producer_epoch)."""
    cid, _throttle, err, pid, epoch = struct.unpack(">iihqh", payload[:20])
    return cid, err, pid, epoch


def parse_fetch_v4_response(payload):
    """Returns (correlation_id, [(topic, partition, error_code, high_watermark, last_stable_offset,
    records_bytes)])."""
    r = Reader(payload)
    cid = r.int()
    r.int()  # throttle_time_ms
    out = []
    for _ in range(r.int()):
        name = r.string()
        for _ in range(r.int()):
            p, err, hw, lso = r.take(">ihqq")
            n_aborted = r.int()
            r.skip(16 * max(n_aborted, 0))
            size = r.int()
            data = b""
            if size > 0:
                data = r.buf[r.pos : r.pos + size]
                r.skip(size)
            out.append((name, p, err, hw, lso, data))
    return cid, out


class Batch:
    """One v2 record batch as stored and served: its size in bytes, offsets, producer fields
    and, when uncompressed, its records [(offset, key, value)] (None for a null key/value)."""

    def __init__(self, data, pos):
        (
            self.base_offset,
            length,
            self.leader_epoch,
            self.magic,
            self.crc,
            self.attributes,
            self.last_offset_delta,
            self.base_timestamp,
            self.max_timestamp,
            self.producer_id,
            self.producer_epoch,
            self.base_sequence,
            self.count,
        ) = struct.unpack_from(">qiibIhiqqqhii", data, pos)
        self.size = 12 + length
        self.last_offset = self.base_offset + self.last_offset_delta
        self.compression = self.attributes & 0x07
        self.records = None
        if self.compression == 0:
            self.records = _records(data[pos + BATCH_RECORDS_OFFSET : pos + self.size], self.base_offset, self.count)


def _records(buf, base_offset, count):
    r = Reader(buf)

    def svarint():
        n = r.uvarint()
        return (n >> 1) ^ -(n & 1)

    out = []
    for _ in range(count):
        end = svarint()
        end += r.pos
        r.skip(1)  # attributes
        svarint()  # timestamp delta
        delta = svarint()
        kl = svarint()
        key = None if kl < 0 else bytes(r.buf[r.pos : r.pos + kl])
        r.skip(max(kl, 0))
        vl = svarint()
        value = None if vl < 0 else bytes(r.buf[r.pos : r.pos + vl])
        r.pos = end  # skip the headers
        out.append((base_offset + delta, key, value))
    return out


def parse_batches(data):
    """The complete v2 batches in a Fetch response's records (a trailing partial batch is dropped)."""
    out, pos = [], 0
    while pos + 61 <= len(data):
        (length,) = struct.unpack_from(">i", data, pos + 8)
        if pos + 12 + length > len(data):
            break
        out.append(Batch(data, pos))
        pos += 12 + length
    return out


# ---------------------------------------------------------------------------
# A raw connection


class RawConn:
    def __init__(self, host, port, timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)

    def send(self, data):
        self.sock.sendall(data)

    def send_frame(self, payload):
        self.sock.sendall(frame(payload))

    def _read_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError(f"connection closed by broker after {len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)

    def recv_frame(self, timeout=10.0):
        self.sock.settimeout(timeout)
        (size,) = struct.unpack(">i", self._read_exact(4))
        if size < 0 or size > 64 * 1024 * 1024:
            raise ValueError(f"absurd response size {size}")
        return self._read_exact(size)

    def request(self, payload, timeout=10.0):
        self.send_frame(payload)
        return self.recv_frame(timeout)

    def outcome(self, timeout=10.0):
        """What the broker does next: ('closed', None), ('response', payload) or ('open', None)
        if nothing happened within timeout."""
        try:
            return "response", self.recv_frame(timeout)
        except TimeoutError:
            return "open", None
        except (ConnectionError, OSError):
            return "closed", None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def api_versions_probe(host, port, timeout=2.0):
    """One ApiVersions v0 round trip; returns {api_key: (min, max)} or raises."""
    with RawConn(host, port, timeout) as c:
        cid, err, apis = parse_api_versions_v0_response(c.request(api_versions_v0_request(0x0F1A0D), timeout))
    if cid != 0x0F1A0D:
        raise ValueError(f"ApiVersions: correlation id {cid:#x} != 0xf1a0d")
    if err != 0:
        raise ValueError(f"ApiVersions v0: error_code {err}")
    return apis


def wait_fjord_ready(proc, host, port, http_status, ready_url, deadline, what, log_tail, error):
    """Wait until a starting fjord process answers ApiVersions (it binds its Kafka listeners
    once it has joined the cluster) and its /ready says 200. Raises `error` with the log
    tail if the process exits or the deadline passes."""
    import time

    stage, last = "ApiVersions", None
    while True:
        if proc.poll() is not None:
            raise error(f"{what} exited with code {proc.returncode} during start (waiting for {stage})\n{log_tail()}")
        try:
            if stage == "ApiVersions":
                api_versions_probe(host, port, timeout=1.0)
                stage = "/ready"
            if stage == "/ready":
                st = http_status(ready_url)
                if st == 200:
                    return
                last = f"/ready returned {st}"
        except (OSError, ValueError, ConnectionError) as e:
            last = e
        if time.monotonic() > deadline:
            raise error(f"{what} not ready in time (waiting for {stage}: {last})\n{log_tail()}")
        time.sleep(0.05)


def log_tail(files, lines, label):
    """The last `lines` lines of each log file, headed by its name; `label` names the
    process when there is no log at all."""
    from pathlib import Path

    out = []
    for f in files:
        try:
            data = Path(f).read_bytes()[-200_000:].decode(errors="replace").splitlines()
        except OSError:
            continue
        out.append(f"--- {label}: last {min(lines, len(data))} lines of {f} ---")
        out.extend(data[-lines:])
    return "\n".join(out) if out else f"(no log files for {label})"


def metadata_v1(host, port, topic, timeout=5.0):
    """One Metadata v1 round trip to this broker alone (an admin client may ask any broker):
    {partition: (error_code, leader, replicas, isr)} of `topic`, and the controller id."""
    body = struct.pack(">i", 1) + kstring(topic)
    cid = 0x3E7A
    with RawConn(host, port, timeout) as c:
        r = Reader(c.request(header_v1(API_METADATA, 1, cid) + body, timeout))
    got = r.int()
    if got != cid:
        raise ValueError(f"Metadata: correlation id {got:#x} != {cid:#x}")
    for _ in range(r.int()):  # brokers: node id, host, port, rack
        r.int()
        r.string()
        r.int()
        r.string()
    controller = r.int()
    parts = {}
    for _ in range(r.int()):  # topics: error code, name, is_internal, partitions
        r.int(">h")
        r.string()
        r.int(">?")
        for _ in range(r.int()):
            err, p, leader = r.take(">hii")
            replicas = r.int32s()
            parts[p] = (err, leader, replicas, r.int32s())
    return parts, controller


def init_producer_id(host, port, timeout=10.0):
    """InitProducerId v0 without a transactional id: (producer_id, producer_epoch); retries while
    the broker answers a retriable error (e.g. COORDINATOR_LOAD_IN_PROGRESS just after a start)."""
    deadline = time.monotonic() + timeout
    cid = 0x1D
    while True:
        with RawConn(host, port, timeout) as c:
            got, err, pid, epoch = parse_init_producer_id_v0_response(c.request(init_producer_id_v0_request(cid)))
        if got != cid:
            raise ValueError(f"InitProducerId: correlation id {got:#x} != {cid:#x}")
        if err == 0:
            return pid, epoch
        if time.monotonic() > deadline:
            raise ValueError(f"InitProducerId: error_code {err}")
        time.sleep(0.2)


def fetch_batches(host, port, topic, partition, start=0, end=None, timeout=10.0):
    """Fetch v4 from `start` until `end` (default: the high watermark): every batch the broker
    serves, in order, as Batch objects. Raises on a partition error."""
    out, offset, cid = [], start, 0x0FE7
    with RawConn(host, port, timeout) as c:
        while True:
            got, parts = parse_fetch_v4_response(c.request(fetch_v4_request(cid, topic, partition, offset), timeout))
            if got != cid:
                raise ValueError(f"Fetch: correlation id {got:#x} != {cid:#x}")
            _, _, err, hw, _, data = parts[0]
            if err != 0:
                raise ValueError(f"Fetch {topic}[{partition}] at {offset}: error_code {err}")
            stop = hw if end is None else end
            batches = [b for b in parse_batches(data) if b.last_offset >= offset]
            if not batches:
                if offset >= stop:
                    return out
                raise ValueError(f"Fetch {topic}[{partition}] at {offset}: no batch below {stop}")
            out.extend(batches)
            offset = batches[-1].last_offset + 1
            if offset >= stop:
                return out
            cid += 1


# ---------------------------------------------------------------------------
# SASL (KIP-43, KIP-152): SaslHandshake then SaslAuthenticate, before any other request but
# ApiVersions on a SASL_PLAINTEXT or SASL_SSL listener.

API_SASL_HANDSHAKE = 17
API_SASL_AUTHENTICATE = 36


def sasl_handshake_request(correlation_id, mechanism, version=1, client_id="fjord-e2e"):
    """SaslHandshake v0/v1 (never flexible): mechanism STRING. With v1 the tokens that follow go
    in SaslAuthenticate requests; with v0 they would be raw size-prefixed SASL bytes."""
    return header_v1(API_SASL_HANDSHAKE, version, correlation_id, client_id) + kstring(mechanism)


def parse_sasl_handshake_response(payload):
    """Returns (correlation_id, error_code, [enabled mechanisms])."""
    r = Reader(payload)
    cid, err = r.int(), r.int(">h")
    return cid, err, [r.string() for _ in range(r.int())]


def plain_token(username, password, authzid=""):
    """RFC 4616 SASL/PLAIN: authzid NUL authcid NUL passwd."""
    return b"\0".join(x.encode() if isinstance(x, str) else x for x in (authzid, username, password))


def sasl_authenticate_request(correlation_id, auth_bytes, version=2, client_id="fjord-e2e"):
    """SaslAuthenticate v0-v2: auth_bytes BYTES; v2 is flexible (header v2, COMPACT_BYTES, tags)."""
    if version >= 2:
        body = uvarint(len(auth_bytes) + 1) + auth_bytes + uvarint(0)
        return header_v2(API_SASL_AUTHENTICATE, version, correlation_id, client_id) + body
    body = struct.pack(">i", len(auth_bytes)) + auth_bytes
    return header_v1(API_SASL_AUTHENTICATE, version, correlation_id, client_id) + body


def parse_sasl_authenticate_response(payload, version):
    """Returns (correlation_id, error_code, error_message, auth_bytes, session_lifetime_ms), the
    lifetime None below v1. v2 has response header v1 (tagged fields after the correlation id)."""
    r = Reader(payload)
    cid = r.int()
    if version >= 2:
        r.uvarint()  # response header tagged fields
        err, message, auth = r.int(">h"), r.compact_string(), r.compact_bytes()
    else:
        err, message, auth = r.int(">h"), r.string(), r.bytes()
    lifetime = r.int(">q") if version >= 1 else None
    return cid, err, message, auth, lifetime


def metadata_v1_request(correlation_id, topics=(), client_id="fjord-e2e"):
    """Metadata v1 of `topics` (an empty list: brokers and controller only; None: every topic)."""
    body = struct.pack(">i", -1) if topics is None else struct.pack(">i", len(topics))
    body += b"".join(kstring(t) for t in topics or ())
    return header_v1(API_METADATA, 1, correlation_id, client_id) + body


def parse_metadata_v1_brokers(payload):
    """Returns (correlation_id, [(node_id, host, port)]) of a Metadata v1 response."""
    r = Reader(payload)
    cid, brokers = r.int(), []
    for _ in range(r.int()):
        node, host, port = r.int(), r.string(), r.int()
        r.string()  # rack
        brokers.append((node, host, port))
    return cid, brokers
