"""TLS material and a raw TLS Kafka connection for the SSL listener tests.

    pki = make_pki(dir)   # openssl CLI: the test venv has no `cryptography`
    pki.ca                # CA certificate (PEM): the truststore of clients and of the broker
    pki.server_pem        # server key (PKCS#8) + certificate (SAN IP:127.0.0.1, DNS:localhost) + CA
    pki.client_pem        # client CN=alice,OU=team-a,O=Fjord signed by the CA: key + cert + CA
    pki.rogue_pem         # a self-signed certificate with the same subject, not from the CA
    pki.other_ca          # a CA that signed nothing here: trusting only it, no broker verifies
    pki.<name>_key / pki.<name>_crt: the key and certificate alone (librdkafka, openssl s_client)

    tls_api_versions(host, port, ca, certfile=, keyfile=, maximum_version=...)  # (apis, "TLSv1.3")
    tls_conn(...)                          # a kproto.RawConn after a verified TLS handshake
    plaintext_exchange(host, port, data)   # what a plain TCP client gets back, and how it ends

Every key is an unencrypted PKCS#8 EC P-256 key, the form Kafka's PEM key store reads without a
key password. Certificates are valid for two days from now.
"""

import secrets
import shutil
import socket
import ssl
import subprocess
from pathlib import Path
from types import SimpleNamespace

from harness import kproto

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"


def _openssl(*args, cwd):
    p = subprocess.run([OPENSSL, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise AssertionError(f"openssl {' '.join(map(str, args))} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def _key(d, name):
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f"{name}.key", cwd=d)
    return d / f"{name}.key"


def _self_signed(d, name, subject, extensions):
    _key(d, name)
    args = ["req", "-x509", "-new", "-key", f"{name}.key", "-sha256", "-days", "2", "-subj", subject]
    for ext in extensions:
        args += ["-addext", ext]
    _openssl(*args, "-out", f"{name}.crt", cwd=d)
    return d / f"{name}.crt"


def _signed(d, name, subject, extensions):
    """A certificate for `subject` signed by d/ca.key."""
    _key(d, name)
    _openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=d)
    (d / f"{name}.ext").write_text("\n".join(extensions) + "\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-set_serial",
        f"0x{secrets.token_hex(12)}",
        "-days",
        "2",
        "-sha256",
        "-extfile",
        f"{name}.ext",
        "-out",
        f"{name}.crt",
        cwd=d,
    )
    return d / f"{name}.crt"


def make_pki(root):
    d = Path(root)
    d.mkdir(parents=True, exist_ok=True)
    ca_ext = ["basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign"]
    _self_signed(d, "ca", "/O=Fjord/CN=Fjord e2e CA", ca_ext)
    _self_signed(d, "other-ca", "/O=Elsewhere/CN=Some other CA", ca_ext)
    leaf = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature"]
    _signed(
        d,
        "server",
        "/O=Fjord/CN=localhost",
        [*leaf, "extendedKeyUsage=serverAuth", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
    )
    _signed(d, "client", "/O=Fjord/OU=team-a/CN=alice", [*leaf, "extendedKeyUsage=clientAuth"])
    # The impostor: alice's very subject, but self-signed.
    _self_signed(
        d, "rogue", "/O=Fjord/OU=team-a/CN=alice", ["basicConstraints=critical,CA:FALSE", "extendedKeyUsage=clientAuth"]
    )

    pki = SimpleNamespace(root=d)
    ca = (d / "ca.crt").read_text()
    for name in ("server", "client", "rogue"):
        key, crt = d / f"{name}.key", d / f"{name}.crt"
        setattr(pki, f"{name}_key", key)
        setattr(pki, f"{name}_crt", crt)
        # Kafka's PEM key store file: the private key, then the chain from the leaf up.
        chain = crt.read_text() + (ca if name != "rogue" else "")
        pem = d / f"{name}.pem"
        pem.write_text(key.read_text() + chain)
        setattr(pki, f"{name}_pem", pem)
    pki.ca = d / "ca.crt"
    pki.other_ca = d / "other-ca.crt"
    return pki


def server_certificate(pki, name):
    """Another server key and certificate for 127.0.0.1, signed by the CA (a rotation), as a PEM
    key store file: its path."""
    d = pki.root
    _signed(
        d,
        name,
        "/O=Fjord/CN=localhost",
        [
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature",
            "extendedKeyUsage=serverAuth",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
    )
    pem = d / f"{name}.pem"
    pem.write_text((d / f"{name}.key").read_text() + (d / f"{name}.crt").read_text() + pki.ca.read_text())
    return pem


def der_of(crt):
    """The DER bytes of the first certificate of a PEM file."""
    return ssl.PEM_cert_to_DER_cert(Path(crt).read_text())


def tls_conn(host, port, cafile, certfile=None, keyfile=None, timeout=10.0, **ctx_opts):
    """A kproto.RawConn whose socket went through a verified TLS handshake (hostname `host`)."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    if certfile:
        ctx.load_cert_chain(str(certfile), str(keyfile) if keyfile else None)
    for k, v in ctx_opts.items():
        setattr(ctx, k, v)
    conn = kproto.RawConn(host, port, timeout)
    try:
        conn.sock = ctx.wrap_socket(conn.sock, server_hostname=host)
    except (OSError, ssl.SSLError):
        conn.close()
        raise
    return conn


def tls_api_versions(host, port, cafile, timeout=10.0, **kw):
    """ApiVersions v0 over TLS: ({api_key: (min, max)}, negotiated TLS version)."""
    cid = 0x7151
    with tls_conn(host, port, cafile, timeout=timeout, **kw) as c:
        got_cid, err, apis = kproto.parse_api_versions_v0_response(c.request(kproto.api_versions_v0_request(cid)))
        version = c.sock.version()
    if got_cid != cid or err != 0:
        raise AssertionError(f"ApiVersions over TLS: correlation id {got_cid:#x} (sent {cid:#x}), error_code {err}")
    return apis, version


def plaintext_exchange(host, port, payload, timeout=10.0):
    """Send `payload` on a plain TCP connection and collect what comes back until the peer
    closes or `timeout` passes: (bytes received, 'closed' | 'reset' | 'open')."""
    got = bytearray()
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(payload)
        s.settimeout(timeout)
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return bytes(got), "closed"
                got += chunk
        except TimeoutError:
            return bytes(got), "open"
        except ConnectionResetError:
            return bytes(got), "reset"
