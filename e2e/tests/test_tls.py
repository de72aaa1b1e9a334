"""TLS listeners: Kafka's SSL security protocol on a listener of its own next to PLAINTEXT,
configured with Kafka's keys only (ssl.keystore.type=PEM and ssl.truststore.type=PEM from files,
ssl.client.auth and its per-listener form listener.name.ssl.ssl.client.auth,
ssl.enabled.protocols). What this proves, with real clients:

- Apache Kafka's Java clients, confluent-kafka (librdkafka) and kcat produce and consume over
  TLS, verifying the broker's certificate and its IP subjectAltName against the test CA; the
  metadata on the TLS listener names the TLS port, and the PLAINTEXT listener serves the same log;
- the TLS listener gives no service to plaintext Kafka (a raw ApiVersions gets no Kafka answer
  and the connection ends), and a client trusting another CA does not connect;
- with client authentication required on that listener, a certificate signed by the CA gets in,
  no certificate or a self-signed one with the same subject does not (TLS 1.2 and 1.3), and
  PLAINTEXT is unaffected;
- ssl.enabled.protocols=TLSv1.3 refuses a TLS 1.2 handshake; by default both versions work;
- (Fjord) a rotated key store file is served to new connections within seconds, without a
  restart and without cutting open ones, and a broken one leaves the last good certificate.

The certificates are made once per module with the openssl CLI (harness/tls.py); the extra
listener comes from the harness key EXTRA_LISTENERS (harness/broker.py). Every client call has a
timeout, so a broker without TLS fails here with a message, never a hang.
"""

import re
import ssl
import struct
import time

import pytest
from conftest import DEFAULT_OVERRIDES

from harness import kproto
from harness.broker import EXTRA_LISTENERS
from harness.clients import (
    AdminClient,
    NewTopic,
    Producer,
    create_topic,
    produce,
    run,
    unique,
    wait_for,
    wait_topic,
)
from harness.secured import console_consume, console_produce, host_port, refused, values
from harness.tls import OPENSSL, der_of, make_pki, plaintext_exchange, server_certificate, tls_api_versions, tls_conn

# ConsoleProducer exits 0 even when no record could be sent: its log is the verdict.
JAVA_TROUBLE = re.compile(r"\bERROR\b|Exception")
API_VERSIONS = 18
TLS_ALERT = 0x15  # TLS record content type "alert"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_overrides(pki, more=None):
    """A PLAINTEXT and an SSL listener; the server key and chain and the CA as PEM files."""
    return {
        **DEFAULT_OVERRIDES,
        EXTRA_LISTENERS: "SSL",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(pki.server_pem),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(pki.ca),
        **(more or {}),
    }


@pytest.fixture(scope="module")
def tls_broker(module_broker_factory, pki):
    """Server authentication only, ssl.enabled.protocols left at its default."""
    return module_broker_factory.start(tls_overrides(pki))


def rdkafka_tls(ca, cert=None, key=None):
    """librdkafka over TLS; it verifies the broker's name (here its IP) by default."""
    conf = {"security.protocol": "SSL", "ssl.ca.location": str(ca)}
    if cert:
        conf.update({"ssl.certificate.location": str(cert), "ssl.key.location": str(key)})
    return conf


def java_properties(path, pki, keystore=None):
    lines = ["security.protocol=SSL", "ssl.truststore.type=PEM", f"ssl.truststore.location={pki.ca}"]
    if keystore:
        lines += ["ssl.keystore.type=PEM", f"ssl.keystore.location={keystore}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def java_produce(tools, bootstrap, topic, lines, props):
    r = console_produce(tools, bootstrap, topic, lines, props)
    assert not JAVA_TROUBLE.search(r.stdout + r.stderr), f"console producer over TLS\n{r.describe()}"
    return r


def s_client(addr, pki, *args):
    """openssl s_client handshake (verifying the chain and the IP SAN) then EOF: (rc, output)."""
    r = run(
        [
            OPENSSL,
            "s_client",
            "-connect",
            addr,
            "-CAfile",
            pki.ca,
            "-verify_return_error",
            "-verify_ip",
            host_port(addr)[0],
            "-brief",
            *args,
        ],
        timeout=20,
        input="",
        check=False,
    )
    return r.rc, r.stdout + r.stderr


# ---------------------------------------------------------------------------


def test_java_client_produces_and_consumes_over_tls(tls_broker, pki, tools, tmp_path):
    tls = tls_broker.listeners["SSL"]
    topic = create_topic(tls_broker.bootstrap, unique("tls-java"), 1)
    props = java_properties(tmp_path / "client.properties", pki)
    lines = [f"java over tls {i}" for i in range(200)]

    java_produce(tools, tls, topic, lines, props)
    assert console_consume(tools, tls, topic, len(lines), props) == lines
    # One log behind both listeners.
    assert values(tls_broker.bootstrap, topic, len(lines)) == lines


def test_librdkafka_and_kcat_over_tls(tls_broker, pki, tools):
    tls = tls_broker.listeners["SSL"]
    conf = rdkafka_tls(pki.ca)
    topic = unique("tls-rdkafka")
    a = AdminClient({"bootstrap.servers": tls, **conf})
    a.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)], operation_timeout=30)[topic].result(30)
    wait_topic(tls_broker.bootstrap, topic, 1)

    first = [f"librdkafka over tls {i}" for i in range(500)]
    delivered = produce(tls, topic, first, partition=0, conf=conf, timeout=30)
    assert [o for _, o, _ in delivered] == list(range(len(first)))
    assert values(tls, topic, len(first), conf=conf) == first

    kcat_tls = [tools.kcat, "-b", tls, "-X", "security.protocol=ssl", "-X", f"ssl.ca.location={pki.ca}"]
    r = run([*kcat_tls, "-L", "-m", "10", "-t", topic], timeout=30)
    # Metadata asked on the TLS listener hands out the TLS address, not the PLAINTEXT one.
    assert re.search(rf"broker \d+ at {re.escape(tls)}\b", r.stdout), r.describe()
    assert f'topic "{topic}" with 1 partitions' in r.stdout, r.describe()

    second = [f"kcat over tls {i}" for i in range(300)]
    run([*kcat_tls, "-P", "-t", topic, "-p", "0"], timeout=30, input="\n".join(second) + "\n")
    r = run([*kcat_tls, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%o %s\n"], timeout=30)
    assert r.stdout.splitlines() == [f"{o} {v}" for o, v in enumerate(first + second)], r.describe(2000)
    assert values(tls_broker.bootstrap, topic, len(first) + len(second)) == first + second


def test_a_plaintext_client_gets_no_service_on_the_tls_listener(tls_broker, pki):
    host, port = host_port(tls_broker.listeners["SSL"])
    cid = 0x0DD
    got, end = plaintext_exchange(host, port, kproto.frame(kproto.api_versions_v0_request(cid)), timeout=10)
    what = f"plaintext ApiVersions v0 to the TLS listener {host}:{port}: got {got[:64]!r}, connection {end}"
    assert not (len(got) >= 8 and struct.unpack(">i", got[4:8])[0] == cid), f"{what}: a Kafka answer"
    # Nothing at all, or a TLS alert record, and then the end of the connection.
    assert not got or got[0] == TLS_ALERT, f"{what}: neither nothing nor a TLS alert"
    assert end in ("closed", "reset"), f"{what}: still open after 10 s"
    print(what)

    apis, version = tls_api_versions(host, port, pki.ca)
    assert API_VERSIONS in apis and version in ("TLSv1.2", "TLSv1.3"), (apis, version)

    errors = refused(f"{host}:{port}", {}, "librdkafka with security.protocol=PLAINTEXT on the TLS port")
    print(f"plaintext librdkafka on the TLS port: {errors}")

    # A client that trusts another CA: the broker's certificate does not verify.
    reports, errors = [], []
    p = Producer(
        {
            "bootstrap.servers": f"{host}:{port}",
            **rdkafka_tls(pki.other_ca),
            "message.timeout.ms": 4000,
            "log_level": 0,
            "error_cb": lambda e: errors.append(str(e)),
        }
    )
    p.produce(unique("never"), b"x", on_delivery=lambda err, _msg: reports.append(err))
    deadline = time.monotonic() + 15
    while not reports and time.monotonic() < deadline:
        p.poll(0.2)
    assert reports and reports[0] is not None, f"delivery with an untrusted broker certificate: {reports}"
    assert any("SSL handshake failed" in e and "certificate verify failed" in e for e in errors), errors
    print(f"librdkafka trusting another CA: {[e for e in errors if 'SSL' in e][0]}")


def test_mutual_tls(broker_factory, pki, tools, tmp_path):
    # Client auth required on the SSL listener only: the per-listener key beats the global one.
    b = broker_factory.start(
        tls_overrides(
            pki,
            {
                "ssl.client.auth": "none",
                "listener.name.ssl.ssl.client.auth": "required",
                "ssl.enabled.protocols": "TLSv1.2,TLSv1.3",
            },
        )
    )
    tls = b.listeners["SSL"]
    host, port = host_port(tls)
    topic = create_topic(b.bootstrap, unique("mtls"), 1)

    alice = java_properties(tmp_path / "alice.properties", pki, keystore=pki.client_pem)
    java_lines = [f"alice via java {i}" for i in range(100)]
    java_produce(tools, tls, topic, java_lines, alice)
    assert console_consume(tools, tls, topic, len(java_lines), alice) == java_lines

    alice_rd = rdkafka_tls(pki.ca, pki.client_crt, pki.client_key)
    rd_lines = [f"alice via librdkafka {i}" for i in range(100)]
    produce(tls, topic, rd_lines, partition=0, conf=alice_rd, timeout=30)
    assert values(tls, topic, 200, conf=alice_rd) == java_lines + rd_lines

    # Refused at the TLS layer, on both versions; with TLS 1.3 the client only learns it from
    # the alert that follows its Finished, so the refusal shows on the first request. Python's
    # OpenSSL presents the rogue certificate whatever CA names the server asks for; librdkafka
    # (below) holds a certificate back whose issuer is not among them.
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        apis, got = tls_api_versions(
            host, port, pki.ca, certfile=pki.client_crt, keyfile=pki.client_key, maximum_version=version
        )
        assert API_VERSIONS in apis and got == version.name.replace("_", "."), got
        for who, cert in (("no certificate", None), ("the rogue certificate", pki.rogue_crt)):
            kw = {"certfile": cert, "keyfile": pki.rogue_key} if cert else {}
            try:
                tls_api_versions(host, port, pki.ca, maximum_version=version, minimum_version=version, **kw)
            except OSError as e:  # ssl.SSLError, or the connection closed
                print(f"{version.name} with {who}: {type(e).__name__}: {e}")
            else:
                pytest.fail(f"{version.name} with {who}: ApiVersions answered on a client-auth-required listener")

    for who, conf in (
        ("no certificate", rdkafka_tls(pki.ca)),
        ("the rogue certificate", rdkafka_tls(pki.ca, pki.rogue_crt, pki.rogue_key)),
    ):
        errors = refused(tls, conf, f"librdkafka with {who}", match=lambda e: "SSL" in e)
        print(f"librdkafka with {who}: {errors}")

    nobody = java_properties(tmp_path / "nobody.properties", pki)
    r = console_produce(tools, tls, topic, ["not allowed"], nobody, "--command-property", "max.block.ms=20000")
    assert "SslAuthenticationException" in r.stdout + r.stderr, r.describe()

    # PLAINTEXT needs no certificate and serves the same log.
    produce(b.bootstrap, topic, ["plaintext still works"], partition=0, timeout=30)
    assert values(b.bootstrap, topic, 201) == [*java_lines, *rd_lines, "plaintext still works"]


def test_tls_versions(tls_broker, broker_factory, pki):
    tls = tls_broker.listeners["SSL"]
    for flag, version in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
        rc, out = s_client(tls, pki, flag)
        assert rc == 0 and f"Protocol version: {version}" in out and "Verification: OK" in out, (
            f"default ssl.enabled.protocols, s_client {flag}: exit {rc}\n{out}"
        )

    b = broker_factory.start(tls_overrides(pki, {"ssl.enabled.protocols": "TLSv1.3"}))
    tls13 = b.listeners["SSL"]
    rc, out = s_client(tls13, pki, "-tls1_3")
    assert rc == 0 and "Protocol version: TLSv1.3" in out and "Verification: OK" in out, (
        f"ssl.enabled.protocols=TLSv1.3, s_client -tls1_3: exit {rc}\n{out}"
    )
    rc, out = s_client(tls13, pki, "-tls1_2")
    assert rc != 0 and "CONNECTION ESTABLISHED" not in out, (
        f"ssl.enabled.protocols=TLSv1.3, s_client -tls1_2 connected: exit {rc}\n{out}"
    )
    print(f"s_client -tls1_2 against TLSv1.3 only: {out.strip()}")


def _served_certificate(addr, pki):
    host, port = host_port(addr)
    with tls_conn(host, port, pki.ca) as c:
        return c.sock.getpeercert(binary_form=True)


@pytest.mark.fjord_only
def test_a_rotated_certificate_is_served_without_a_restart(broker_factory, pki, tmp_path):
    """Kafka reloads a key store when its location is altered as a dynamic broker config;
    Fjord, whose configuration is its files, watches them."""
    keystore = tmp_path / "keystore.pem"
    keystore.write_bytes(pki.server_pem.read_bytes())
    b = broker_factory.start(tls_overrides(pki, {"ssl.keystore.location": str(keystore)}))
    addr = b.listeners["SSL"]
    host, port = host_port(addr)
    assert _served_certificate(addr, pki) == der_of(pki.server_crt)
    held = tls_conn(host, port, pki.ca)

    rotated = server_certificate(pki, "server-rotated")
    # Written aside and renamed over, as a Secret volume or cert-manager updates a file.
    tmp = keystore.with_suffix(".new")
    tmp.write_bytes(rotated.read_bytes())
    tmp.rename(keystore)
    t0 = time.monotonic()
    new = der_of(pki.root / "server-rotated.crt")
    wait_for(lambda: _served_certificate(addr, pki) == new, 15, what="the rotated certificate on a new connection")
    print(f"rotated certificate served after {time.monotonic() - t0:.1f} s")
    # A connection opened before the rotation carries on.
    with held:
        cid, err, _ = kproto.parse_api_versions_v0_response(held.request(kproto.api_versions_v0_request(7)))
        assert (cid, err) == (7, 0), (cid, err)

    # A broken file is refused and the last good certificate stays.
    keystore.write_text("not a key store\n")
    wait_for(
        lambda: "TLS reload failed" in b.log_path.read_text(), 15, what="the broker to report the broken key store"
    )
    assert _served_certificate(addr, pki) == new
