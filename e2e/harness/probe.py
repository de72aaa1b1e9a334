#!/usr/bin/env python3
"""Wait until a Kafka-protocol broker answers an ApiVersions request.

    probe.py HOST:PORT [--timeout S] [--pid PID] [--since EPOCH_NS]

Sends ApiVersions v0 (no client software name, so any broker answers) and
checks the response has the same correlation id and error_code 0. Polls every
20 ms until it answers (exit 0, prints elapsed ms), the timeout passes (exit 1)
or --pid exits (exit 3). Elapsed ms is measured from --since (a time.time_ns()
value, e.g. taken just before the broker process was started) or from the
probe's own start. Stdlib only, so it runs with any python3.
"""

import argparse
import socket
import struct
import sys
import time


def api_versions(host, port, timeout=2.0, correlation_id=0x0F1A0D):
    """One ApiVersions v0 round trip. Returns the list of (api_key, min, max)."""
    client_id = b"fjord-probe"
    body = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", _read(s, 4))[0]
        resp = _read(s, size)
    cid, err = struct.unpack(">ih", resp[:6])
    if cid != correlation_id:
        raise ValueError(f"correlation id {cid} != {correlation_id}")
    if err != 0:
        raise ValueError(f"ApiVersions error_code {err}")
    (n,) = struct.unpack(">i", resp[6:10])
    return [struct.unpack(">hhh", resp[10 + 6 * i : 16 + 6 * i]) for i in range(n)]


def _read(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def wait_ready(host, port, timeout=60.0, pid=None, since_ns=None):
    """Returns elapsed ms when ready; raises TimeoutError / ProcessLookupError."""
    t0 = since_ns if since_ns is not None else time.time_ns()
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            api_versions(host, port, timeout=1.0)
            return (time.time_ns() - t0) / 1e6
        except (OSError, ValueError, struct.error) as e:
            last = e
        if pid is not None and not alive(pid):
            raise ProcessLookupError(f"process {pid} exited before {host}:{port} answered")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{host}:{port} did not answer ApiVersions within {timeout}s ({last})")
        time.sleep(0.02)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("addr", help="HOST:PORT")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--pid", type=int)
    ap.add_argument("--since", type=int, help="start time, time.time_ns()")
    a = ap.parse_args()
    host, _, port = a.addr.rpartition(":")
    try:
        ms = wait_ready(host or "127.0.0.1", int(port), a.timeout, a.pid, a.since)
    except ProcessLookupError as e:
        print(e, file=sys.stderr)
        return 3
    except TimeoutError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"{ms:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
