"""SASL on SASL_PLAINTEXT and SASL_SSL listeners next to PLAINTEXT: PLAIN with the users of a JAAS
entry, SCRAM-SHA-256 and SCRAM-SHA-512 with credentials kept in the metadata log
(AlterUserScramCredentials, DescribeUserScramCredentials). Configured with Kafka's keys only
(sasl.enabled.mechanisms or its per-listener form listener.name.<l>.sasl.enabled.mechanisms, the
PlainLoginModule's users in listener.name.<l>.plain.sasl.jaas.config, a bare ScramLoginModule entry
in listener.name.<l>.scram-sha-256.sasl.jaas.config and ...scram-sha-512... (Kafka wants one per
listener and SCRAM mechanism), connection.failed.authentication.delay.ms; SASL_SSL also takes the
ssl.* PEM keys). What this proves, with real clients:

PLAIN
- Apache Kafka's Java clients produce and consume over both SASL listeners, confluent-kafka
  (librdkafka), kcat and kafkajs over SASL_SSL (and librdkafka over SASL_PLAINTEXT), as either
  user of the JAAS entry; the metadata on a SASL listener names that listener's port and the
  PLAINTEXT listener serves the same log;
- a wrong password gets nothing: librdkafka reports the SASL authentication error and gets no
  Metadata, the Java producer fails with SaslAuthenticationException, kafkajs with
  KafkaJSSASLAuthenticationError;
- on the wire (raw requests): SaslHandshake v1 for a mechanism not enabled (GSSAPI) is answered
  UNSUPPORTED_SASL_MECHANISM listing the enabled ones (compared sorted: Kafka lists them in a hash
  map's order); SaslAuthenticate v0, v1 and v2 with a wrong PLAIN token (or an unknown user, or a
  malformed token) are answered SASL_AUTHENTICATION_FAILED and the connection is closed, with the
  right one error 0; SaslHandshake v0 followed by a raw token (the pre-KIP-152 framing) logs in too;
- nothing is served before authentication: Metadata or Produce first, or a SaslAuthenticate
  without a handshake, gets no answer and the connection ends, and a client without SASL gets no
  Metadata; ApiVersions is answered, with Kafka's SASL version ranges (clients pick their SASL
  framing from it); once authenticated, the same connection is served, and a second handshake is
  ILLEGAL_SASL_STATE;
- connection.failed.authentication.delay.ms holds the failure answer itself back (KIP-306; the
  close follows it), a successful login is not delayed.

SCRAM
- users added with kafka-configs (--add-config 'SCRAM-SHA-512=[iterations=8192,password=...]')
  while the broker runs log in at once: the Java console producer and consumer as alice
  (SCRAM-SHA-512) over SASL_SSL, librdkafka as bob (SCRAM-SHA-256) over SASL_PLAINTEXT, kafkajs as
  bob over SASL_SSL; kafka-configs --describe --entity-type users, with or without --entity-name,
  prints Kafka's lines ("SCRAM credential configs for user-principal 'alice' are
  SCRAM-SHA-512=iterations=8192");
- a wrong password, an unknown user, a mechanism the user has no credential for and a credential
  deleted with kafka-configs --delete-config are refused (librdkafka's SASL authentication error,
  Java's SaslAuthenticationException) in Kafka's one sentence for them all, "Authentication failed
  during authentication due to invalid credentials with SASL mechanism M": no hint whether the user
  exists. A deleted credential is gone from --describe; the user's PLAIN login still works;
- confluent-kafka's AdminClient: iterations outside 4096..16384 are UNACCEPTABLE_CREDENTIAL;
  describing an unknown user and deleting a credential that does not exist are RESOURCE_NOT_FOUND;
  two changes of one user in one request (two mechanisms) are DUPLICATE_RESOURCE and neither is
  applied; describing without users lists every user (librdkafka sends an empty list);
- on the wire (RFC 5802 computed with hashlib and hmac): the server-first extends the client's
  nonce and carries the stored salt and iterations, the server-final v= is the server signature
  the client computes; a wrong proof, or an unknown user at client-first, is
  SASL_AUTHENTICATION_FAILED in the same words, and the connection is closed;
- the client-final nonce must be the server's exactly (Kafka 4): librdkafka before 2.6.1 puts its
  own nonce in front once more (librdkafka#4895), so kcat 1.7.1 (librdkafka 2.0.2) cannot log in
  with SCRAM and is used with PLAIN only.

One module broker (PLAINTEXT, SASL_PLAINTEXT, SASL_SSL; PLAIN and both SCRAMs on both SASL
listeners) serves all but the delay test, whose broker has a SASL_PLAINTEXT listener configured
with the per-listener mechanism key only (PLAIN). Each SCRAM test adds the users it needs (alice and
bob with kafka-configs, others with the AdminClient), so any of them runs alone.
Every client call has a timeout, so a broker without SASL fails here with a message, never a hang.
"""

import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import struct
import time

import pytest
from confluent_kafka.admin import (
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)
from conftest import DEFAULT_OVERRIDES

from harness import kproto
from harness.broker import EXTRA_LISTENERS
from harness.clients import (
    AdminClient,
    KafkaError,
    KafkaException,
    NewTopic,
    Producer,
    create_topic,
    produce,
    run,
    unique,
    wait_topic,
    watermarks,
)
from harness.secured import console_consume, console_produce, host_port, refused, values
from harness.tls import make_pki, tls_conn

# ConsoleProducer exits 0 even when no record could be sent: its log is the verdict.
JAVA_TROUBLE = re.compile(r"\bERROR\b|Exception")

USERS = {"alice": "alice-secret", "bob": "bob-secret"}
PLAIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"
SERVER_JAAS = f"{PLAIN_MODULE} required " + " ".join(f'user_{u}="{p}"' for u, p in USERS.items()) + ";"
SASL_LISTENERS = ("SASL_PLAINTEXT", "SASL_SSL")
# SCRAM users live in the metadata log (AlterUserScramCredentials), not in JAAS; Kafka still
# wants a ScramLoginModule entry per listener and mechanism, which Fjord accepts.
SCRAM_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
SCRAM = ("SCRAM-SHA-256", "SCRAM-SHA-512")
MECHANISMS = ["PLAIN", *SCRAM]  # sorted
SCRAM_HASH = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
CONFIG_COMMAND = "kafka.admin.ConfigCommand"  # kafka-configs

NONE = 0
UNSUPPORTED_SASL_MECHANISM = 33
ILLEGAL_SASL_STATE = 34
SASL_AUTHENTICATION_FAILED = 58
# Kafka's PlainSaslServer, word for word: what a client shows its user.
BAD_CREDENTIALS = "Authentication failed: Invalid username or password"
# Kafka's SaslServerAuthenticator, for any SCRAM failure (it does not pass the SaslException's
# own words on: they could tell that a user exists).
SCRAM_BAD_CREDENTIALS = "Authentication failed during authentication due to invalid credentials with SASL mechanism {}"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def sasl_broker(module_broker_factory, pki):
    """PLAINTEXT (also inter-broker), SASL_PLAINTEXT and SASL_SSL, both SASL listeners PLAIN
    (alice and bob), SCRAM-SHA-256 and SCRAM-SHA-512 (no user until a test adds one);
    connection.failed.authentication.delay.ms at its default (100)."""
    return module_broker_factory.start(
        {
            **DEFAULT_OVERRIDES,
            EXTRA_LISTENERS: ",".join(SASL_LISTENERS),
            "sasl.enabled.mechanisms": ",".join(MECHANISMS),
            **{f"listener.name.{name.lower()}.plain.sasl.jaas.config": SERVER_JAAS for name in SASL_LISTENERS},
            **{
                f"listener.name.{name.lower()}.{m.lower()}.sasl.jaas.config": f"{SCRAM_MODULE} required;"
                for name in SASL_LISTENERS
                for m in SCRAM
            },
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(pki.server_pem),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(pki.ca),
        }
    )


def rdkafka_sasl(protocol, pki, user="alice", password=None, mechanism="PLAIN"):
    conf = {
        "security.protocol": protocol,
        "sasl.mechanisms": mechanism,
        "sasl.username": user,
        "sasl.password": USERS[user] if password is None else password,
    }
    if protocol == "SASL_SSL":
        conf["ssl.ca.location"] = str(pki.ca)
    return conf


def java_properties(path, protocol, pki, user="alice", password=None, mechanism="PLAIN"):
    password = USERS[user] if password is None else password
    module = PLAIN_MODULE if mechanism == "PLAIN" else SCRAM_MODULE
    lines = [
        f"security.protocol={protocol}",
        f"sasl.mechanism={mechanism}",
        f'sasl.jaas.config={module} required username="{user}" password="{password}";',
    ]
    if protocol == "SASL_SSL":
        lines += ["ssl.truststore.type=PEM", f"ssl.truststore.location={pki.ca}"]
    path.write_text("\n".join(lines) + "\n")
    return path


# --- raw protocol ---------------------------------------------------------------------------


def raw_conn(broker, listener, pki):
    """A raw Kafka connection to `listener` (through a verified TLS handshake on SASL_SSL)."""
    host, port = host_port(broker.listeners[listener])
    return tls_conn(host, port, pki.ca) if listener == "SASL_SSL" else kproto.RawConn(host, port, 10)


def handshake(conn, mechanism, cid=0x5A51):
    """SaslHandshake v1: (error_code, the enabled mechanisms sorted). Kafka lists them in the
    order of a hash map's keys (PLAIN, SCRAM-SHA-512, SCRAM-SHA-256), not the configured one."""
    got, err, mechanisms = kproto.parse_sasl_handshake_response(
        conn.request(kproto.sasl_handshake_request(cid, mechanism))
    )
    assert got == cid, f"SaslHandshake: correlation id {got:#x} (sent {cid:#x})"
    return err, sorted(mechanisms)


def authenticate(conn, token, version=2, cid=0x5A52):
    """SaslAuthenticate: (error_code, error_message, auth_bytes, session_lifetime_ms, seconds to the answer)."""
    t0 = time.monotonic()
    payload = conn.request(kproto.sasl_authenticate_request(cid, token, version))
    took = time.monotonic() - t0
    got, err, message, auth, lifetime = kproto.parse_sasl_authenticate_response(payload, version)
    assert got == cid, f"SaslAuthenticate v{version}: correlation id {got:#x} (sent {cid:#x})"
    return err, message, auth, lifetime, took


def login(conn, user="alice", password=None, version=2, enabled=MECHANISMS):
    """A PLAIN login; `enabled` is what the handshake answer must list."""
    err, mechanisms = handshake(conn, "PLAIN")
    assert (err, mechanisms) == (NONE, enabled), f"SaslHandshake PLAIN: error {err}, mechanisms {mechanisms}"
    password = USERS[user] if password is None else password
    return authenticate(conn, kproto.plain_token(user, password), version)


def metadata(conn, cid=0x3E7B):
    """Metadata v1 without topics: the brokers [(node, host, port)] the listener hands out."""
    got, brokers = kproto.parse_metadata_v1_brokers(conn.request(kproto.metadata_v1_request(cid)))
    assert got == cid, f"Metadata: correlation id {got:#x} (sent {cid:#x})"
    return brokers


def closed_within(conn, timeout=5.0):
    """Seconds until the broker ends the connection without sending anything; fails if a Kafka
    answer comes or the connection stays open."""
    t0 = time.monotonic()
    what, payload = conn.outcome(timeout)
    took = time.monotonic() - t0
    assert what == "closed", f"expected the broker to close the connection; got {what}" + (
        f" (an answer with correlation id {struct.unpack('>i', payload[:4])[0]:#x})" if payload else ""
    )
    return took


# ---------------------------------------------------------------------------


def test_java_clients_over_both_sasl_listeners(sasl_broker, pki, tools, tmp_path):
    topic = create_topic(sasl_broker.bootstrap, unique("sasl-java"), 1)
    produced = []
    for protocol in SASL_LISTENERS:
        props = java_properties(tmp_path / f"{protocol}.properties", protocol, pki)
        lines = [f"java over {protocol} {i}" for i in range(100)]
        r = console_produce(tools, sasl_broker.listeners[protocol], topic, lines, props)
        assert not JAVA_TROUBLE.search(r.stdout + r.stderr), f"console producer over {protocol}\n{r.describe()}"
        produced += lines
    for protocol in SASL_LISTENERS:
        props = tmp_path / f"{protocol}.properties"
        got = console_consume(tools, sasl_broker.listeners[protocol], topic, len(produced), props)
        assert got == produced, f"console consumer over {protocol}"
    # One log behind all three listeners.
    assert values(sasl_broker.bootstrap, topic, len(produced)) == produced


def test_librdkafka_over_sasl(sasl_broker, pki):
    sasl_ssl = sasl_broker.listeners["SASL_SSL"]
    conf = rdkafka_sasl("SASL_SSL", pki)
    topic = unique("sasl-rdkafka")
    a = AdminClient({"bootstrap.servers": sasl_ssl, **conf})
    a.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)], operation_timeout=30)[topic].result(30)
    wait_topic(sasl_broker.bootstrap, topic, 1)

    first = [f"librdkafka over SASL_SSL {i}" for i in range(300)]
    delivered = produce(sasl_ssl, topic, first, partition=0, conf=conf, timeout=30)
    assert [o for _, o, _ in delivered] == list(range(len(first)))
    assert values(sasl_ssl, topic, len(first), conf=conf) == first

    # SASL_PLAINTEXT, as bob: the other user of the JAAS entry.
    plain = sasl_broker.listeners["SASL_PLAINTEXT"]
    bob = rdkafka_sasl("SASL_PLAINTEXT", pki, user="bob")
    second = [f"librdkafka over SASL_PLAINTEXT {i}" for i in range(200)]
    delivered = produce(plain, topic, second, partition=0, conf=bob, timeout=30)
    assert [o for _, o, _ in delivered] == list(range(len(first), len(first) + len(second)))
    assert values(plain, topic, len(first) + len(second), conf=bob) == first + second

    assert values(sasl_broker.bootstrap, topic, len(first) + len(second)) == first + second


def test_kcat_over_sasl_ssl(sasl_broker, pki, tools):
    """kcat as bob. Its librdkafka (2.0) needs SaslHandshake v0 in the broker's ApiVersions
    range (its feature check) before it uses PLAIN, as older clients do."""
    sasl_ssl = sasl_broker.listeners["SASL_SSL"]
    topic = create_topic(sasl_broker.bootstrap, unique("sasl-kcat"), 1)
    kcat = [tools.kcat, "-b", sasl_ssl, "-m", "10"]
    for k, v in rdkafka_sasl("SASL_SSL", pki, user="bob").items():
        kcat += ["-X", f"{k}={v}"]
    r = run([*kcat, "-L", "-t", topic], timeout=30)
    # Metadata asked on the SASL_SSL listener hands out the SASL_SSL address.
    assert re.search(rf"broker \d+ at {re.escape(sasl_ssl)}\b", r.stdout), r.describe()
    assert f'topic "{topic}" with 1 partitions' in r.stdout, r.describe()

    lines = [f"kcat over SASL_SSL {i}" for i in range(300)]
    run([*kcat, "-P", "-t", topic, "-p", "0"], timeout=30, input="\n".join(lines) + "\n")
    r = run([*kcat, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%o %s\n"], timeout=30)
    assert r.stdout.splitlines() == [f"{o} {v}" for o, v in enumerate(lines)], r.describe(2000)
    assert values(sasl_broker.bootstrap, topic, len(lines)) == lines


KAFKAJS = r"""
// kafkajs over SASL_SSL (PLAIN, or SASL_MECHANISM): MODE=ok produces N records to TOPIC and
// reads them back in a consumer group; MODE=refused only connects an admin client, which must fail.
const fs = require('fs');
const { Kafka, logLevel } = require('kafkajs');
const env = process.env;
const timer = setTimeout(() => { console.error('TIMEOUT'); process.exit(3); }, 60000);
const kafka = new Kafka({
  clientId: 'fjord-e2e-sasl',
  brokers: [env.BROKER],
  ssl: { ca: [fs.readFileSync(env.CA, 'utf8')] },
  sasl: { mechanism: env.SASL_MECHANISM || 'plain', username: env.SASL_USER, password: env.SASL_PASSWORD },
  connectionTimeout: 5000,
  authenticationTimeout: 5000,
  retry: { retries: 1 },
  logLevel: logLevel.NOTHING,
});

const refused = async () => {
  const admin = kafka.admin();
  try {
    await admin.connect();
    const cluster = await admin.describeCluster();
    console.log('CONNECTED ' + JSON.stringify(cluster));
    process.exit(1);
  } catch (e) {
    console.log('REFUSED ' + JSON.stringify({ name: e.name, message: e.message }));
  }
};

const ok = async () => {
  const n = parseInt(env.N, 10);
  const admin = kafka.admin();
  await admin.connect();
  console.log('CLUSTER ' + JSON.stringify(await admin.describeCluster()));
  await admin.disconnect();
  const producer = kafka.producer();
  await producer.connect();
  const values = [...Array(n).keys()].map((i) => `kafkajs over SASL_SSL ${i}`);
  await producer.send({ topic: env.TOPIC, messages: values.map((value) => ({ value, partition: 0 })) });
  await producer.disconnect();
  const consumer = kafka.consumer({ groupId: env.GROUP });
  const got = [];
  let done;
  const all = new Promise((resolve) => { done = resolve; });
  await consumer.connect();
  await consumer.subscribe({ topic: env.TOPIC, fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ message }) => {
      got.push(message.value.toString());
      if (got.length >= n) done();
    },
  });
  await all;
  await consumer.disconnect();
  console.log('RECEIVED ' + JSON.stringify(got));
};

(env.MODE === 'ok' ? ok() : refused()).then(() => { clearTimeout(timer); process.exit(0); }, (e) => {
  console.error('FAILED', e);
  process.exit(1);
});
"""


def kafkajs(tools, tmp_path, broker, pki, mode, password, **env):
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed", pytrace=False)
    script = tmp_path / "sasl.js"
    script.write_text(KAFKAJS)
    return run(
        [node, script],
        timeout=90,
        check=False,
        env={
            "NODE_PATH": tools.node_path,
            "KAFKAJS_NO_PARTITIONER_WARNING": "1",
            "BROKER": broker.listeners["SASL_SSL"],
            "CA": str(pki.ca),
            "SASL_USER": "alice",
            "SASL_PASSWORD": password,
            "MODE": mode,
            **env,
        },
    )


def test_kafkajs_over_sasl_ssl(sasl_broker, pki, tools, tmp_path):
    topic = create_topic(sasl_broker.bootstrap, unique("sasl-kafkajs"), 1)
    r = kafkajs(tools, tmp_path, sasl_broker, pki, "ok", USERS["alice"], TOPIC=topic, N="50", GROUP=unique("g"))
    assert r.rc == 0, f"kafkajs over SASL_SSL\n{r.describe()}"
    cluster = json.loads(re.search(r"^CLUSTER (.*)$", r.stdout, re.M).group(1))
    host, port = host_port(sasl_broker.listeners["SASL_SSL"])
    assert [(b["host"], b["port"]) for b in cluster["brokers"]] == [(host, port)], cluster
    expected = [f"kafkajs over SASL_SSL {i}" for i in range(50)]
    assert json.loads(re.search(r"^RECEIVED (.*)$", r.stdout, re.M).group(1)) == expected, r.describe()
    assert values(sasl_broker.bootstrap, topic, 50) == expected


def test_a_wrong_password_gets_nothing(sasl_broker, pki, tools, tmp_path):
    for protocol in SASL_LISTENERS:
        errors = refused(
            sasl_broker.listeners[protocol],
            rdkafka_sasl(protocol, pki, password="not-alice-secret"),
            f"librdkafka with a wrong password on {protocol}",
            match=lambda e: "SASL authentication error" in e and BAD_CREDENTIALS in e,
        )
        print(f"librdkafka, wrong password on {protocol}: {errors}")
    # An unknown user is refused with the very same words (no hint that the user exists).
    errors = refused(
        sasl_broker.listeners["SASL_SSL"],
        {**rdkafka_sasl("SASL_SSL", pki), "sasl.username": "mallory"},
        "librdkafka as an unknown user",
        match=lambda e: BAD_CREDENTIALS in e,
    )
    print(f"librdkafka, unknown user: {errors}")

    topic = create_topic(sasl_broker.bootstrap, unique("sasl-refused"), 1)
    for protocol in SASL_LISTENERS:
        props = java_properties(tmp_path / f"wrong-{protocol}.properties", protocol, pki, password="guess")
        r = console_produce(
            tools,
            sasl_broker.listeners[protocol],
            topic,
            ["not allowed"],
            props,
            "--command-property",
            "max.block.ms=20000",
        )
        out = r.stdout + r.stderr
        assert "SaslAuthenticationException" in out and BAD_CREDENTIALS in out, r.describe()

    r = kafkajs(tools, tmp_path, sasl_broker, pki, "refused", "guess")
    assert r.rc == 0, f"kafkajs with a wrong password connected or crashed\n{r.describe()}"
    outcome = json.loads(re.search(r"^REFUSED (.*)$", r.stdout, re.M).group(1))
    assert outcome["name"] == "KafkaJSSASLAuthenticationError" and BAD_CREDENTIALS in outcome["message"], outcome
    print(f"kafkajs, wrong password: {outcome}")

    # Nothing reached the log.
    assert watermarks(sasl_broker.bootstrap, topic, 0) == (0, 0)


def test_sasl_handshake_and_authenticate_on_the_wire(sasl_broker, pki):
    """SaslHandshake v1 and SaslAuthenticate v0-v2 as Kafka's clients send them."""
    for listener in SASL_LISTENERS:
        with raw_conn(sasl_broker, listener, pki) as c:
            t0 = time.monotonic()
            err, mechanisms = handshake(c, "GSSAPI")
            took = time.monotonic() - t0
            assert (err, mechanisms) == (UNSUPPORTED_SASL_MECHANISM, MECHANISMS), (listener, err, mechanisms)
            closed = closed_within(c)
            print(f"{listener}: GSSAPI refused after {took:.3f} s, closed {closed:.3f} s later")

        for version in (0, 1, 2):
            with raw_conn(sasl_broker, listener, pki) as c:
                err, message, auth, lifetime, took = login(c, version=version)
                assert err == NONE, f"{listener} SaslAuthenticate v{version}, right password: {err} {message!r}"
                # No re-authentication (connections.max.reauth.ms=0): no session lifetime.
                assert lifetime == (None if version == 0 else 0), (listener, version, lifetime)
                assert auth == b"", (listener, version, auth)
                got = [(h, p) for _, h, p in metadata(c)]
                assert got == [host_port(sasl_broker.listeners[listener])], f"{listener} v{version}: Metadata {got}"

            with raw_conn(sasl_broker, listener, pki) as c:
                err, message, _, _, took = login(c, password="alice-secreT", version=version)
                assert (err, message) == (SASL_AUTHENTICATION_FAILED, BAD_CREDENTIALS), (listener, version)
                closed = closed_within(c)
                print(f"{listener} v{version}: wrong password answered after {took:.3f} s, closed {closed:.3f} s later")
                # Kafka's default connection.failed.authentication.delay.ms is 100 ms.
                assert took < 0.9, f"{listener} v{version}: the failure took {took:.3f} s with the default delay"

    # Other bad PLAIN tokens: all SASL_AUTHENTICATION_FAILED then closed; the message is shown
    # for the report (Kafka words a malformed token differently from bad credentials).
    for what, token in (
        ("an unknown user", kproto.plain_token("mallory", USERS["alice"])),
        ("bob's password for alice", kproto.plain_token("alice", USERS["bob"])),
        ("an authorization id that is not the user", kproto.plain_token("alice", USERS["alice"], authzid="bob")),
        ("an empty password", kproto.plain_token("alice", "")),
        ("two fields, not three", b"alice\0alice-secret"),
    ):
        with raw_conn(sasl_broker, "SASL_PLAINTEXT", pki) as c:
            err, mechanisms = handshake(c, "PLAIN")
            assert err == NONE, err
            err, message, *_ = authenticate(c, token)
            assert err == SASL_AUTHENTICATION_FAILED, f"{what}: error {err} {message!r}"
            closed_within(c)
            print(f"{what}: {err} {message!r}")


def test_sasl_handshake_v0_then_raw_tokens(sasl_broker, pki):
    """SaslHandshake v0 (KIP-43, from Kafka 0.10.0): the PLAIN token that follows is sent as raw
    size-prefixed bytes, not in a SaslAuthenticate request, and a success is answered by an empty
    one. Kafka 4 still serves it, and librdkafka's feature check wants v0 in the range (kcat)."""
    host, port = host_port(sasl_broker.listeners["SASL_PLAINTEXT"])
    with raw_conn(sasl_broker, "SASL_PLAINTEXT", pki) as c:
        c.send_frame(kproto.sasl_handshake_request(0x5A55, "PLAIN", version=0))
        what, payload = c.outcome(5)
        assert what == "response", f"SaslHandshake v0 PLAIN: the connection was {what}, not answered"
        cid, err, mechanisms = kproto.parse_sasl_handshake_response(payload)
        assert (cid, err, sorted(mechanisms)) == (0x5A55, NONE, MECHANISMS), (cid, err, mechanisms)
        c.send_frame(kproto.plain_token("alice", USERS["alice"]))
        assert c.recv_frame() == b"", "the answer to a right raw PLAIN token"
        assert [(h, p) for _, h, p in metadata(c)] == [(host, port)]
    # A wrong raw token has no error answer to carry it: the connection ends.
    with raw_conn(sasl_broker, "SASL_PLAINTEXT", pki) as c:
        c.send_frame(kproto.sasl_handshake_request(0x5A56, "PLAIN", version=0))
        assert kproto.parse_sasl_handshake_response(c.recv_frame())[1] == NONE
        c.send_frame(kproto.plain_token("alice", "guess"))
        print(f"v0, wrong raw token: closed after {closed_within(c):.3f} s")


@pytest.mark.parametrize("listener", SASL_LISTENERS)
def test_no_service_before_authentication(sasl_broker, pki, listener):
    host, port = host_port(sasl_broker.listeners[listener])
    # Metadata as the first request: no answer, the connection ends.
    with raw_conn(sasl_broker, listener, pki) as c:
        c.send_frame(kproto.metadata_v1_request(0x3E7C))
        print(f"{listener}: Metadata first: closed after {closed_within(c):.3f} s")
    # So does Produce: nothing is written.
    topic = create_topic(sasl_broker.bootstrap, unique("sasl-gate"), 1)
    with raw_conn(sasl_broker, listener, pki) as c:
        c.send_frame(kproto.produce_v3_request(0x9D, topic, 0, kproto.record_batch(["sneaked in"])))
        closed_within(c)
    assert watermarks(sasl_broker.bootstrap, topic, 0) == (0, 0)

    with raw_conn(sasl_broker, listener, pki) as c:
        # ApiVersions is served before the handshake: a client asks it for the SASL versions.
        cid, err, apis = kproto.parse_api_versions_v0_response(c.request(kproto.api_versions_v0_request(0x18)))
        assert (cid, err) == (0x18, NONE), (cid, err)
        sasl_versions = {k: apis.get(k) for k in (kproto.API_SASL_HANDSHAKE, kproto.API_SASL_AUTHENTICATE)}
        assert None not in sasl_versions.values(), f"ApiVersions on {listener} lacks a SASL API: {apis}"
        err, message, *_ = login(c, user="bob")
        assert err == NONE, f"{listener}: logging in as bob: {err} {message!r}"
        # The same connection is now served; Metadata hands out this listener's address.
        assert [(h, p) for _, h, p in metadata(c)] == [(host, port)]
        # A second handshake on an authenticated connection: ILLEGAL_SASL_STATE, still served.
        err, mechanisms = handshake(c, "PLAIN", cid=0x5A54)
        assert err == ILLEGAL_SASL_STATE, f"{listener}: SaslHandshake after authentication: {err} {mechanisms}"
        assert metadata(c, cid=0x3E7D)

    # A client that does not speak SASL gets no Metadata there either.
    protocol = {"SASL_PLAINTEXT": "PLAINTEXT", "SASL_SSL": "SSL"}[listener]
    conf = {"security.protocol": protocol, **({"ssl.ca.location": str(pki.ca)} if protocol == "SSL" else {})}
    errors = refused(f"{host}:{port}", conf, f"librdkafka with security.protocol={protocol} on {listener}")
    print(f"{listener}: librdkafka without SASL: {errors}")

    # Kafka's ranges: SaslHandshake v0 is what librdkafka's feature check looks for (kcat above).
    assert sasl_versions == {kproto.API_SASL_HANDSHAKE: (0, 1), kproto.API_SASL_AUTHENTICATE: (0, 2)}, (
        f"SaslHandshake, SaslAuthenticate versions on {listener}: {sasl_versions}"
    )


@pytest.mark.parametrize("listener", SASL_LISTENERS)
def test_sasl_authenticate_without_a_handshake_is_not_answered(sasl_broker, pki, listener):
    """Kafka takes any request but ApiVersions and SaslHandshake as the first SASL request for
    "Unexpected Kafka request of type SASL_AUTHENTICATE during SASL handshake": it closes the
    connection unanswered, whatever the token (here the right one)."""
    with raw_conn(sasl_broker, listener, pki) as c:
        c.send_frame(kproto.sasl_authenticate_request(0x5A53, kproto.plain_token("alice", USERS["alice"])))
        what, payload = c.outcome(5)
        if what == "response":
            _, err, message, *_ = kproto.parse_sasl_authenticate_response(payload, 2)
            what = f"answered error {err} {message!r}, then {c.outcome(5)[0]}"
        assert what == "closed", f"{listener}: SaslAuthenticate without a handshake: {what}"


def test_failed_authentication_delay(broker_factory):
    """connection.failed.authentication.delay.ms=1000, on a broker whose one SASL listener takes
    its mechanisms from the per-listener key (no broker-wide sasl.enabled.mechanisms)."""
    b = broker_factory.start(
        {
            **DEFAULT_OVERRIDES,
            EXTRA_LISTENERS: "SASL_PLAINTEXT",
            "listener.name.sasl_plaintext.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config": SERVER_JAAS,
            "connection.failed.authentication.delay.ms": "1000",
        }
    )
    host, port = host_port(b.listeners["SASL_PLAINTEXT"])

    with kproto.RawConn(host, port, 10) as c:
        err, message, _, _, took = login(c, password="wrong", enabled=["PLAIN"])
        assert (err, message) == (SASL_AUTHENTICATION_FAILED, BAD_CREDENTIALS), (err, message)
        closed = closed_within(c)
        print(f"wrong password: answered after {took:.3f} s, closed {closed:.3f} s after the answer")
        assert took >= 0.9, f"the failed login was answered after {took:.3f} s, not held back for 1 s"

    with kproto.RawConn(host, port, 10) as c:
        t0 = time.monotonic()
        err, mechanisms = handshake(c, "SCRAM-SHA-512")
        took = time.monotonic() - t0
        assert (err, mechanisms) == (UNSUPPORTED_SASL_MECHANISM, ["PLAIN"]), (err, mechanisms)
        closed = closed_within(c)
        print(f"unsupported mechanism: answered after {took:.3f} s, closed {closed:.3f} s after the answer")

    with kproto.RawConn(host, port, 10) as c:
        c.send_frame(kproto.metadata_v1_request(0x3E7E))
        print(f"Metadata before authentication: closed after {closed_within(c):.3f} s")

    # Success is not delayed.
    with kproto.RawConn(host, port, 10) as c:
        err, message, _, _, took = login(c, enabled=["PLAIN"])
        assert err == NONE and took < 0.5, f"right password: error {err} {message!r} after {took:.3f} s"
        assert [(h, p) for _, h, p in metadata(c)] == [(host, port)]


# --- SCRAM: credentials in the metadata log -------------------------------------------------


def kafka_configs(tools, broker, *args, check=True):
    """kafka-configs (ConfigCommand) against the PLAINTEXT listener."""
    return tools.run_class(CONFIG_COMMAND, "--bootstrap-server", broker.bootstrap, *args, timeout=60, check=check)


def add_scram(tools, broker, user, mechanism, iterations, password):
    r = kafka_configs(
        tools,
        broker,
        "--alter",
        "--add-config",
        f"{mechanism}=[iterations={iterations},password={password}]",
        "--entity-type",
        "users",
        "--entity-name",
        user,
    )
    assert r.stdout.strip() == f"Completed updating config for user {user}.", r.describe()


def describe_scram(tools, broker, user=None):
    """kafka-configs --describe --entity-type users [--entity-name user]: ({user: what it lists},
    the run). The lines are Kafka's: SCRAM credential configs for user-principal 'U' are M=iterations=N."""
    r = kafka_configs(tools, broker, "--describe", "--entity-type", "users", *(["--entity-name", user] if user else []))
    listed = dict(re.findall(r"^SCRAM credential configs for user-principal '([^']+)' are (.+)$", r.stdout, re.M))
    return listed, r


class ScramClient:
    """The client side of RFC 5802 (no channel binding, gs2 header "n,,")."""

    def __init__(self, mechanism, user, password):
        self.hash = SCRAM_HASH[mechanism]
        self.password = password.encode()
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.first_bare = f"n={user},r={self.nonce}"
        self.server_signature = None

    def _hmac(self, key, msg):
        return hmac.new(key, msg, self.hash).digest()

    def client_first(self):
        return f"n,,{self.first_bare}".encode()

    def client_final(self, server_first, wrong_proof=False, nonce=None):
        """The client-final message for `server_first` ({r, s, i}), with its nonce unless `nonce`
        (then the proof is computed over that); remembers the signature the server-final must carry."""
        text = server_first.decode()
        attrs = dict(kv.split("=", 1) for kv in text.split(","))
        salted = hashlib.pbkdf2_hmac(self.hash, self.password, base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = self._hmac(salted, b"Client Key")
        stored_key = hashlib.new(self.hash, client_key).digest()
        without_proof = f"c=biws,r={nonce or attrs['r']}"  # biws: base64 of the gs2 header "n,,"
        auth_message = f"{self.first_bare},{text},{without_proof}".encode()
        proof = bytes(a ^ b for a, b in zip(client_key, self._hmac(stored_key, auth_message), strict=True))
        if wrong_proof:
            proof = bytes([proof[0] ^ 0x01]) + proof[1:]
        self.server_signature = self._hmac(self._hmac(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()


def scram_admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap, "log_level": 0})


def scram_error(future, timeout=30):
    """The KafkaError a failed admin future carries (fails the test if it succeeded)."""
    try:
        got = future.result(timeout)
    except KafkaException as e:
        return e.args[0]
    pytest.fail(f"expected an error, got {got!r}")


def add_scram_user(broker, user, password, iterations, salt=None):
    """Credentials through confluent-kafka's AdminClient, one request per mechanism
    (`iterations`: {mechanism name: count})."""
    a = scram_admin(broker)
    for mechanism, n in iterations.items():
        info = ScramCredentialInfo(ScramMechanism[mechanism.replace("-", "_")], n)
        upsert = UserScramCredentialUpsertion(user, info, password.encode(), salt)
        a.alter_user_scram_credentials([upsert], request_timeout=30)[user].result(30)


def scram_failures(texts, mechanism):
    """The texts that carry Kafka's words for a failed SCRAM login with `mechanism`."""
    return [t for t in texts if SCRAM_BAD_CREDENTIALS.format(mechanism) in t]


def test_scram_users_from_kafka_configs(sasl_broker, pki, tools, tmp_path):
    """Users added with kafka-configs while the broker runs log in with SCRAM at once: the Java
    clients as alice (SCRAM-SHA-512) over SASL_SSL, librdkafka as bob (SCRAM-SHA-256) over
    SASL_PLAINTEXT, kafkajs as bob over SASL_SSL; kafka-configs --describe lists them."""
    add_scram(tools, sasl_broker, "alice", "SCRAM-SHA-512", 8192, USERS["alice"])
    add_scram(tools, sasl_broker, "bob", "SCRAM-SHA-256", 4096, USERS["bob"])
    listed, r = describe_scram(tools, sasl_broker, "alice")
    assert (
        r.stdout.strip() == "SCRAM credential configs for user-principal 'alice' are SCRAM-SHA-512=iterations=8192"
    ), r.describe()

    topic = create_topic(sasl_broker.bootstrap, unique("scram"), 1)
    sasl_ssl = sasl_broker.listeners["SASL_SSL"]
    props = java_properties(tmp_path / "alice-scram.properties", "SASL_SSL", pki, mechanism="SCRAM-SHA-512")
    java_lines = [f"java SCRAM-SHA-512 over SASL_SSL {i}" for i in range(100)]
    r = console_produce(tools, sasl_ssl, topic, java_lines, props)
    assert not JAVA_TROUBLE.search(r.stdout + r.stderr), f"console producer, SCRAM-SHA-512\n{r.describe()}"
    assert console_consume(tools, sasl_ssl, topic, len(java_lines), props) == java_lines

    plain = sasl_broker.listeners["SASL_PLAINTEXT"]
    bob = rdkafka_sasl("SASL_PLAINTEXT", pki, user="bob", mechanism="SCRAM-SHA-256")
    rd_lines = [f"librdkafka SCRAM-SHA-256 over SASL_PLAINTEXT {i}" for i in range(200)]
    delivered = produce(plain, topic, rd_lines, partition=0, conf=bob, timeout=30)
    assert [o for _, o, _ in delivered] == list(range(len(java_lines), len(java_lines) + len(rd_lines)))
    assert values(plain, topic, len(java_lines) + len(rd_lines), conf=bob) == java_lines + rd_lines
    assert values(sasl_broker.bootstrap, topic, len(java_lines) + len(rd_lines)) == java_lines + rd_lines

    # kafkajs as bob, SCRAM-SHA-256 over SASL_SSL, with a consumer group, on a topic of its own.
    js_topic = create_topic(sasl_broker.bootstrap, unique("scram-kafkajs"), 1)
    r = kafkajs(
        tools,
        tmp_path,
        sasl_broker,
        pki,
        "ok",
        USERS["bob"],
        SASL_USER="bob",
        SASL_MECHANISM="scram-sha-256",
        TOPIC=js_topic,
        N="50",
        GROUP=unique("g"),
    )
    assert r.rc == 0, f"kafkajs, SCRAM-SHA-256 over SASL_SSL\n{r.describe()}"
    js_lines = [f"kafkajs over SASL_SSL {i}" for i in range(50)]
    assert json.loads(re.search(r"^RECEIVED (.*)$", r.stdout, re.M).group(1)) == js_lines, r.describe()
    assert values(sasl_broker.bootstrap, js_topic, len(js_lines)) == js_lines

    # Without --entity-name the tool asks for every user (DescribeUserScramCredentials with an
    # empty list of users, which Kafka reads as "all").
    listed, r = describe_scram(tools, sasl_broker)
    print(r.stdout)
    assert listed.get("alice") == "SCRAM-SHA-512=iterations=8192", r.describe()
    assert listed.get("bob") == "SCRAM-SHA-256=iterations=4096", r.describe()


def test_scram_refusals_and_a_deleted_credential(sasl_broker, pki, tools, tmp_path):
    """A wrong password, an unknown user, a mechanism the user has no credential for and a
    deleted credential are refused, by Kafka in the same words each time: SCRAM failures do not
    tell an unknown user from a wrong password."""
    add_scram(tools, sasl_broker, "alice", "SCRAM-SHA-512", 8192, USERS["alice"])
    sasl_ssl = sasl_broker.listeners["SASL_SSL"]
    alice = rdkafka_sasl("SASL_SSL", pki, mechanism="SCRAM-SHA-512")
    Producer({"bootstrap.servers": sasl_ssl, **alice}).list_topics(timeout=10)  # she is in

    def auth_error(e):
        return "SASL authentication error" in e and "Authentication failed" in e

    seen = {}  # what: (mechanism, the texts the client showed)
    for what, mechanism, conf in (
        ("a wrong password", "SCRAM-SHA-512", {**alice, "sasl.password": "alice-secreT"}),
        ("an unknown user", "SCRAM-SHA-512", {**alice, "sasl.username": "mallory"}),
        ("a mechanism she has no credential for", "SCRAM-SHA-256", {**alice, "sasl.mechanisms": "SCRAM-SHA-256"}),
    ):
        seen[f"librdkafka, {what}"] = (mechanism, refused(sasl_ssl, conf, f"librdkafka with {what}", match=auth_error))

    topic = create_topic(sasl_broker.bootstrap, unique("scram-refused"), 1)
    props = java_properties(tmp_path / "wrong.properties", "SASL_SSL", pki, password="guess", mechanism="SCRAM-SHA-512")
    r = console_produce(tools, sasl_ssl, topic, ["not allowed"], props, "--command-property", "max.block.ms=20000")
    java = sorted(set(re.findall(r"SaslAuthenticationException: .*", r.stdout + r.stderr)))
    assert java, f"the Java producer with a wrong SCRAM password\n{r.describe()}"
    seen["Java, a wrong password"] = ("SCRAM-SHA-512", java)
    assert watermarks(sasl_broker.bootstrap, topic, 0) == (0, 0)

    r = kafka_configs(
        tools,
        sasl_broker,
        "--alter",
        "--delete-config",
        "SCRAM-SHA-512",
        "--entity-type",
        "users",
        "--entity-name",
        "alice",
    )
    assert r.stdout.strip() == "Completed updating config for user alice.", r.describe()
    # A user without credentials: the tool prints nothing for her.
    listed, r = describe_scram(tools, sasl_broker, "alice")
    assert (listed, r.stdout.strip()) == ({}, ""), r.describe()
    listed, r = describe_scram(tools, sasl_broker)
    assert "alice" not in listed, r.describe()

    deleted = refused(sasl_ssl, alice, "librdkafka as alice after her SCRAM credential was deleted", match=auth_error)
    seen["librdkafka, a deleted credential"] = ("SCRAM-SHA-512", deleted)
    # Her PLAIN login (the JAAS entry) is another matter.
    Producer({"bootstrap.servers": sasl_ssl, **rdkafka_sasl("SASL_SSL", pki)}).list_topics(timeout=10)

    for what, (_, texts) in seen.items():
        print(f"{what}: {texts}")
    for what, (mechanism, texts) in seen.items():
        assert scram_failures(texts, mechanism), f"{what}: not Kafka's words: {texts}"


def test_scram_credentials_through_the_admin_api(sasl_broker):
    """AlterUserScramCredentials and DescribeUserScramCredentials from confluent-kafka's
    AdminClient: Kafka's error codes for what it refuses (the messages are printed)."""
    a = scram_admin(sasl_broker)
    user = unique("carol")
    sha256, sha512 = ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512

    def expect(what, future, code):
        e = scram_error(future)
        print(f"{what}: {e.name()} {e.str()!r}")
        assert e.code() == code, f"{what}: {e}"

    # Kafka's bounds: 4096 to 16384 iterations.
    for iterations in (1000, 16385):
        f = a.alter_user_scram_credentials(
            [UserScramCredentialUpsertion(user, ScramCredentialInfo(sha256, iterations), b"pw")], request_timeout=30
        )[user]
        expect(f"upsert with {iterations} iterations", f, KafkaError.UNACCEPTABLE_CREDENTIAL)
    f = a.describe_user_scram_credentials([user], request_timeout=30)[user]
    expect("describe an unknown user", f, KafkaError.RESOURCE_NOT_FOUND)
    f = a.alter_user_scram_credentials([UserScramCredentialDeletion(user, sha512)], request_timeout=30)[user]
    expect("delete a credential of an unknown user", f, KafkaError.RESOURCE_NOT_FOUND)

    for mechanism, iterations in ((sha256, 4096), (sha512, 16384)):
        f = a.alter_user_scram_credentials(
            [UserScramCredentialUpsertion(user, ScramCredentialInfo(mechanism, iterations), b"pw")], request_timeout=30
        )[user]
        assert f.result(30) is None
    d = a.describe_user_scram_credentials([user], request_timeout=30)[user].result(30)
    assert sorted((c.mechanism, c.iterations) for c in d.scram_credential_infos) == [(sha256, 4096), (sha512, 16384)]

    a.alter_user_scram_credentials([UserScramCredentialDeletion(user, sha256)], request_timeout=30)[user].result(30)
    d = a.describe_user_scram_credentials([user], request_timeout=30)[user].result(30)
    assert [(c.mechanism, c.iterations) for c in d.scram_credential_infos] == [(sha512, 16384)]
    f = a.alter_user_scram_credentials([UserScramCredentialDeletion(user, sha256)], request_timeout=30)[user]
    expect("delete a mechanism the user does not have", f, KafkaError.RESOURCE_NOT_FOUND)

    # Two changes of one user in one request, whatever their mechanisms: DUPLICATE_RESOURCE, and
    # neither is applied (Kafka's controller keys a request's changes by user name).
    other = unique("dave")
    f = a.alter_user_scram_credentials(
        [
            UserScramCredentialUpsertion(other, ScramCredentialInfo(sha256, 4096), b"pw"),
            UserScramCredentialUpsertion(other, ScramCredentialInfo(sha512, 4096), b"pw"),
        ],
        request_timeout=30,
    )[other]
    expect("two upsertions of one user (two mechanisms) in one request", f, KafkaError.DUPLICATE_RESOURCE)
    f = a.describe_user_scram_credentials([other], request_timeout=30)[other]
    expect("describe that user", f, KafkaError.RESOURCE_NOT_FOUND)

    # Every user: librdkafka sends an empty list of users (Kafka: empty or null means all).
    every = a.describe_user_scram_credentials(request_timeout=30).result(30)
    assert user in every and other not in every, f"describing every user lists {sorted(every)}"
    assert [(c.mechanism, c.iterations) for c in every[user].scram_credential_infos] == [(sha512, 16384)]


def test_scram_exchange_on_the_wire(sasl_broker, pki):
    """RFC 5802 in SaslAuthenticate v2: client-first, server-first (the client's nonce extended,
    the stored salt and iteration count), client-final with the proof, server-final v= the
    server's signature; a wrong proof or an unknown user is SASL_AUTHENTICATION_FAILED, closed,
    in the same words."""
    user, password, salt = unique("raw-scram"), "raw-secret", b"fjord-e2e-salt"
    iterations = {"SCRAM-SHA-256": 4096, "SCRAM-SHA-512": 5000}
    add_scram_user(sasl_broker, user, password, iterations, salt)

    messages = {}
    for listener in SASL_LISTENERS:
        host, port = host_port(sasl_broker.listeners[listener])
        for mechanism in SCRAM:
            with raw_conn(sasl_broker, listener, pki) as c:
                assert handshake(c, mechanism) == (NONE, MECHANISMS), (listener, mechanism)
                client = ScramClient(mechanism, user, password)
                err, message, server_first, *_ = authenticate(c, client.client_first())
                assert err == NONE, f"{listener} {mechanism} client-first: {err} {message!r}"
                attrs = dict(kv.split("=", 1) for kv in server_first.decode().split(","))
                assert list(attrs) == ["r", "s", "i"], server_first
                assert attrs["r"].startswith(client.nonce) and len(attrs["r"]) > len(client.nonce), server_first
                assert (base64.b64decode(attrs["s"]), int(attrs["i"])) == (salt, iterations[mechanism]), server_first
                err, message, server_final, *_ = authenticate(c, client.client_final(server_first), cid=0x5A57)
                assert err == NONE, f"{listener} {mechanism} client-final: {err} {message!r}"
                assert server_final == b"v=" + base64.b64encode(client.server_signature), server_final
                assert [(h, p) for _, h, p in metadata(c)] == [(host, port)]

            with raw_conn(sasl_broker, listener, pki) as c:
                handshake(c, mechanism)
                client = ScramClient(mechanism, user, password)
                err, message, server_first, *_ = authenticate(c, client.client_first())
                assert err == NONE, (err, message)
                err, message, *_ = authenticate(c, client.client_final(server_first, wrong_proof=True), cid=0x5A57)
                assert err == SASL_AUTHENTICATION_FAILED, f"{listener} {mechanism}, wrong proof: {err} {message!r}"
                closed_within(c)
                messages[listener, mechanism, "a wrong proof"] = message

            with raw_conn(sasl_broker, listener, pki) as c:
                handshake(c, mechanism)
                err, message, *_ = authenticate(c, ScramClient(mechanism, "mallory", password).client_first())
                assert err == SASL_AUTHENTICATION_FAILED, f"{listener} {mechanism}, unknown user: {err} {message!r}"
                closed_within(c)
                messages[listener, mechanism, "an unknown user (client-first)"] = message

    for (listener, mechanism, what), message in messages.items():
        print(f"{listener} {mechanism}, {what}: {message!r}")
    wrong = {k: m for k, m in messages.items() if m != SCRAM_BAD_CREDENTIALS.format(k[1])}
    assert not wrong, f"not Kafka's words: {wrong}"


def test_scram_client_final_nonce_must_match(sasl_broker, pki, tools):
    """The client-final nonce must be the server-first one exactly (RFC 5802), as Kafka 4 checks
    it. librdkafka before 2.6.1 (librdkafka#4895) puts its own nonce in front of it once more;
    Kafka 3.8.1 to 3.9 accepted that, Kafka 4 refuses it. kcat 1.7.1 here is built on
    librdkafka 2.0.2, so it cannot log in with SCRAM."""
    user, password = unique("nonce"), "nonce-secret"
    add_scram_user(sasl_broker, user, password, {m: 4096 for m in SCRAM})

    accepted = []
    for mechanism in SCRAM:
        with raw_conn(sasl_broker, "SASL_PLAINTEXT", pki) as c:
            handshake(c, mechanism)
            client = ScramClient(mechanism, user, password)
            err, message, server_first, *_ = authenticate(c, client.client_first())
            assert err == NONE, (err, message)
            # The proof is right for the message as sent.
            doubled = client.nonce + dict(kv.split("=", 1) for kv in server_first.decode().split(","))["r"]
            err, message, auth, *_ = authenticate(c, client.client_final(server_first, nonce=doubled), cid=0x5A57)
            print(f"{mechanism}, the client nonce twice: {err} {message!r} {auth!r}")
            if err == NONE:
                accepted.append(mechanism)
            else:
                assert (err, message) == (SASL_AUTHENTICATION_FAILED, SCRAM_BAD_CREDENTIALS.format(mechanism))
                closed_within(c)

    topic = create_topic(sasl_broker.bootstrap, unique("scram-kcat"), 1)
    kcat = [tools.kcat, "-b", sasl_broker.listeners["SASL_PLAINTEXT"], "-m", "10"]
    for k, v in rdkafka_sasl("SASL_PLAINTEXT", pki, user, password, mechanism="SCRAM-SHA-256").items():
        kcat += ["-X", f"{k}={v}"]
    r = run([*kcat, "-P", "-t", topic, "-p", "0"], timeout=30, input="kcat\n", check=False)
    print(f"kcat (librdkafka 2.0.2), SCRAM-SHA-256: rc {r.rc} {r.stderr.strip()[:400]}")
    written = watermarks(sasl_broker.bootstrap, topic, 0)[1]
    assert not accepted, f"a client-final whose nonce only ends with the server's was accepted ({accepted})"
    assert r.rc != 0 and scram_failures([r.stderr], "SCRAM-SHA-256"), r.describe()
    assert written == 0
