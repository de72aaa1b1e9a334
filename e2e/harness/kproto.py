"""Hand-written Kafka wire protocol pieces for raw-socket tests.

Only what the acceptance tests need: request headers v1/v2, ApiVersions v0
(request and response, also the KIP-511 fallback response), Produce v3
(non-flexible) with a v2 record batch and a pure-Python, table-driven CRC32C.
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
API_METADATA = 3
API_API_VERSIONS = 18


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


def record_batch(values, keys=None, timestamp_ms=None, base_offset=0):
    """A magic-2 record batch (uncompressed, no producer id) with a correct CRC32C."""
    ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    records = bytearray()
    for i, v in enumerate(values):
        v = v.encode() if isinstance(v, str) else v
        k = keys[i] if keys else None
        if isinstance(k, str):
            k = k.encode()
        body = bytes([0]) + varint(0) + varint(i)
        body += varint(-1) if k is None else varint(len(k)) + k
        body += varint(len(v)) + v
        body += varint(0)  # no headers
        records += varint(len(body)) + body
    after_crc = struct.pack(
        ">hiqqqhii",
        0,  # attributes: no compression, CreateTime, not transactional
        len(values) - 1,  # lastOffsetDelta
        ts,
        ts,  # baseTimestamp, maxTimestamp
        -1,
        -1,
        -1,  # producerId, producerEpoch, baseSequence
        len(values),
    ) + bytes(records)
    after_length = struct.pack(">ibI", -1, 2, crc32c(after_crc)) + after_crc
    return struct.pack(">qi", base_offset, len(after_length)) + after_length


# Offsets inside a v2 batch (from the batch start).
BATCH_CRC_OFFSET = 8 + 4 + 4 + 1  # baseOffset, batchLength, leaderEpoch, magic
BATCH_RECORDS_OFFSET = BATCH_CRC_OFFSET + 4 + 2 + 4 + 8 + 8 + 8 + 2 + 4 + 4


def produce_v3_request(correlation_id, topic, partition, batch, acks=-1, timeout_ms=30000, client_id="fjord-e2e"):
    body = kstring(None)  # transactional_id
    body += struct.pack(">hi", acks, timeout_ms)
    body += struct.pack(">i", 1) + kstring(topic)
    body += struct.pack(">i", 1) + struct.pack(">i", partition)
    body += struct.pack(">i", len(batch)) + batch
    return header_v1(API_PRODUCE, 3, correlation_id, client_id) + body


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
