#!/usr/bin/env python3
"""A stand-in for kubelet + container runtime, for e2e tests against a real control plane.

    $FJORD_PY e2e/kube/node_agent.py --kubeconfig DIR/kubeconfig --state DIR/agent \
        --nodes 3 --image-binary fjord=target/release/fjord [--ip-base 127.0.10.]

It registers Nodes fjord-e2e-0..N-1 (zone-<i>), keeps them Ready (status + Lease), and runs the
containers of pods bound to them as plain local processes: the image is never pulled, a
container whose image starts with a mapped prefix runs the mapped binary instead. Everything
else a pod sees comes from the API as kubelet would build it: env (fieldRef, configMap/secret
refs, envFrom, $(VAR) expansion), volumes (configMap, secret, emptyDir, downwardAPI, projected,
hostPath, persistentVolumeClaim) as folders under --state, readiness from httpGet/tcpSocket/exec
probes, restarts with back-off, graceful deletion. It also provisions PersistentVolumes
(hostPath folders) for the `standard` StorageClass it creates.

Without containers there is no chroot and no network namespace, hence:
  * each pod gets its own loopback address (--ip-base + 2, 3, ...) and must bind it: a
    listener on 0.0.0.0 takes the port on every pod IP of the machine at once;
  * each process runs in a private mount namespace (unshare, propagation private; needs
    root) in which its volume folders are bind-mounted at their real mountPath (subPath,
    readOnly; ConfigMap/Secret/downwardAPI/projected volumes read-only, as kubelet), so paths
    in the pod spec and in config files mean what they say; a missing mount point is created
    on the host (an empty folder, or file), two pods may mount different folders at one path;
  * the ServiceAccount volume (kube-api-access-*: token from the TokenRequest API, ca.crt,
    namespace) is thus at /var/run/secrets/kubernetes.io/serviceaccount, and
    KUBERNETES_SERVICE_HOST/PORT name the apiserver of the agent's kubeconfig (no Service
    routing), so in-cluster clients (kube-rs, client-go) work unchanged;
  * names resolve through a per-pod hosts file bind-mounted over /etc/hosts: the pod's
    hostname and, for every pod of the namespace with spec.hostname + spec.subdomain
    (StatefulSet pods), the headless-service names (<h>.<sub>.<ns>.svc.cluster.local,
    <h>.<sub>.<ns>.svc, <h>.<sub>), ready or not.
A process sees only its pod's env plus PATH, HOSTNAME and KUBERNETES_SERVICE_HOST/PORT, runs
the host's binaries (with the pod folder as working directory unless workingDir is set),
and dies with the agent (setpriv --pdeathsig), which ends them all on SIGTERM/SIGINT. Exec
probes run in the container's mount namespace (nsenter).
Not done: image entrypoints other than the mapped binary, Service ClusterIPs (no kube-proxy),
liveness/startup probes, resource limits, updates of ConfigMap volumes or token rotation after
a pod started, `kubectl logs/exec` (the logs are in <state>/pods/<ns>/<pod>/<container>.log).
"""

import argparse
import base64
import json
import logging
import os
import queue
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import urllib3
from kubernetes import client as kclient
from kubernetes import config as kconfig

PROVISIONER = "fjord.dev/e2e-local"
RUNTIME = "fjord-e2e-agent://1"
LEASE_SECONDS = 40
HEARTBEAT_SECONDS = 10
# Pod conditions the agent writes; others (readiness gates) are kept as they are, since a merge
# patch replaces the whole list.
OWN_CONDITIONS = ("PodScheduled", "Initialized", "ContainersReady", "Ready")
BACKOFF_MAX = 20.0  # kubelet's is 300 s; tests want a crashed broker back quickly
log = logging.getLogger("node-agent")


def now_iso(micro=False):
    t = datetime.now(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def expand(text, lookup):
    """$(VAR) expansion exactly like kubelet (third_party/forked/golang/expansion): $$ is a
    literal $, an unknown or unterminated reference stays as written."""
    out, i, n = [], 0, len(text)
    while i < n:
        if text[i] == "$" and i + 1 < n:
            nxt = text[i + 1]
            if nxt == "(":
                j = text.find(")", i + 2)
                if j >= 0:
                    v = lookup(text[i + 2 : j])
                    out.append(v if v is not None else text[i : j + 1])
                    i = j + 1
                    continue
            out.append("$" if nxt == "$" else "$" + nxt)
            i += 2
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


class ApiError(Exception):
    def __init__(self, status, body):
        super().__init__(f"HTTP {status}: {(body or {}).get('message', body)}")
        self.status = status


class Api:
    """Raw JSON over the kubernetes client's connection pool (auth and TLS from the
    kubeconfig): the agent works on API objects as the API documents them, not on models."""

    def __init__(self, kubeconfig):
        cfg = kclient.Configuration()
        kconfig.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        cfg.connection_pool_maxsize = 16  # three watches + writers + the prober
        self.host = cfg.host
        self.pool = kclient.ApiClient(cfg).rest_client.pool_manager
        self.headers = {"Accept": "application/json"}
        token = cfg.api_key.get("authorization") or cfg.api_key.get("BearerToken")
        if token:
            self.headers["Authorization"] = token if " " in token else f"Bearer {token}"

    def request(self, method, path, body=None, query=None, ctype="application/json", stream=False, timeout=30):
        url = self.host + path + ("?" + urllib.parse.urlencode(query) if query else "")
        r = self.pool.request(
            method,
            url,
            body=None if body is None else json.dumps(body),
            headers=dict(self.headers, **{"Content-Type": ctype}),
            preload_content=not stream,
            retries=False,
            timeout=urllib3.Timeout(connect=5, read=timeout),
        )
        if stream and r.status < 300:
            return r
        data = r.data if not stream else r.read()
        obj = json.loads(data) if data else None
        if r.status >= 300:
            raise ApiError(r.status, obj if isinstance(obj, dict) else {"message": data[:200]})
        return obj

    def get(self, path, **query):
        return self.request("GET", path, query=query or None)

    def create(self, path, body):
        return self.request("POST", path, body)

    def patch(self, path, body):
        return self.request("PATCH", path, body, ctype="application/merge-patch+json")

    def delete(self, path, body=None):
        return self.request("DELETE", path, body)

    def watch(self, path, rv):
        r = self.request(
            "GET",
            path,
            stream=True,
            timeout=150,
            query={"watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true", "timeoutSeconds": "120"},
        )
        try:
            for line in r:  # the apiserver flushes one JSON event per line
                if line.strip():
                    yield json.loads(line)
        finally:
            r.release_conn()


def watcher(api, kind, path, q, stop):
    """List, then watch from the list's resourceVersion; on 410 Gone (history compacted) or
    any error, list again: the main loop gets ("SYNC", items) and replaces its cache."""
    while not stop.is_set():
        try:
            lst = api.get(path)
            rv = lst["metadata"]["resourceVersion"]
            q.put((kind, "SYNC", lst["items"]))
            while not stop.is_set():
                for ev in api.watch(path, rv):
                    obj = ev["object"]
                    if ev["type"] == "ERROR":
                        raise ApiError(obj.get("code", 500), obj)
                    rv = obj["metadata"]["resourceVersion"]
                    if ev["type"] != "BOOKMARK":
                        q.put((kind, ev["type"], obj))
        except Exception as e:  # noqa: BLE001 - logged, then a fresh list
            if not stop.is_set():
                (log.info if isinstance(e, ApiError) and e.status == 410 else log.warning)(
                    "watch %s: %s; listing again", path, e
                )
                time.sleep(1)


class Missing(Exception):
    """A ConfigMap/Secret/PVC the pod needs is not there (yet): retried."""


class Container:
    def __init__(self, spec, binary, init=False, restarts=0):
        self.spec, self.name, self.binary, self.init = spec, spec["name"], binary, init
        self.proc = None
        self.restarts = restarts
        self.run_id = 0
        self.started_at = None
        self.exit = None  # last termination: (exitCode, reason, startedAt, finishedAt, id)
        self.last_exit = None  # the one before, for lastState
        self.waiting = ("ContainerCreating", "")
        self.next_start = 0.0
        self.backoff = 0.0
        self.done = False  # will not run again (init finished, or restartPolicy says so)
        self.ready = False  # readiness probe verdict
        self.spawned_at = 0.0
        self.probe = {"ok": 0, "fail": 0, "due": 0.0}
        self.env, self.argv = {}, []

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def is_ready(self):  # no readiness probe: ready once started, as kubelet
        return self.running and (self.ready or not self.spec.get("readinessProbe"))


class Pod:
    def __init__(self, obj):
        self.obj = obj
        m, s = obj["metadata"], obj["spec"]
        self.uid, self.ns, self.name = m["uid"], m["namespace"], m["name"]
        self.hostname = s.get("hostname") or self.name[:63]
        self.subdomain = s.get("subdomain")
        self.ip = None
        self.dir = None
        self.vols = {}  # volume name -> folder (or file) on the host
        self.hosts_text = None
        self.prepared = False
        self.retry_at = 0.0
        self.problem = None  # (reason, message) while the pod cannot start
        self.start_time = now_iso()
        self.term_deadline = None  # set when termination starts
        self.killed = False
        self.removed = False
        self.gone = False  # no longer in the API
        self.last_status = None
        # restart counts from the API: the agent may have been restarted under running pods
        self.restarts = {
            c["name"]: c.get("restartCount", 0) for c in (obj.get("status") or {}).get("containerStatuses") or []
        }

    @property
    def containers(self):
        return self.init_containers + self.main_containers

    def processes(self):
        return [c for c in self.containers if c.running]


class Agent:
    def __init__(self, args):
        self.args = args
        self.api = Api(args.kubeconfig)
        self.state = Path(args.state).resolve()
        self.nodes = [f"{args.node_prefix}-{i}" for i in range(args.nodes)]
        self.images = sorted(
            ((p, str(Path(b).resolve())) for p, b in (s.split("=", 1) for s in args.image_binary)),
            key=lambda x: -len(x[0]),
        )
        self.q = queue.Queue()
        self.stop = threading.Event()
        self.lock = threading.RLock()
        self.api_pods, self.pvcs, self.pvs = {}, {}, {}
        self.pods = {}
        self.removed = set()  # uids we are done with, until the watch reports their deletion
        self.next_ip = 2
        self.node_uids = {}
        self.server_version = "v0.0.0"
        self._transitions = {}
        u = urllib.parse.urlparse(self.api.host)
        self.api_host, self.api_port = u.hostname, str(u.port or 443)
        self.wrap = self.wrappers()
        self.nsenter = shutil.which("nsenter") or "nsenter"

    # --- setup ------------------------------------------------------------------
    @staticmethod
    def wrappers():
        """The command prefix that starts a container's process: in a private mount (and UTS)
        namespace, with propagation private so that nothing leaks to the host or other pods, its
        volumes bind-mounted at their mount paths and the hostname set; the process dies with
        the agent (setpriv --pdeathsig: also on SIGKILL). Arguments after the prefix: hostname,
        working directory ("" = the pod folder), the agent's state folder, then SOURCE TARGET ro|rw triples, "--" and the
        command. A missing mount point is created (a folder, or an empty file for a file)."""
        tools = {t: shutil.which(t) for t in ("setpriv", "unshare", "mount", "hostname", "sh", "mkdir")}
        missing = [t for t, p in tools.items() if not p]
        if missing:
            why = f"{', '.join(missing)} not found"
        else:
            script = f"""set -e
{tools["mount"]} --make-rprivate /
{tools["hostname"]} "$0"
wd="$1"; root="$2"; shift 2
# The agent's state folder is reached through a bind of its own first: a volume mounted at
# a path above it (an emptyDir at /tmp) would otherwise hide the sources of later mounts.
stage=/run/fjord-e2e-agent-src
{tools["mkdir"]} -p "$stage"
[ -z "$root" ] || {tools["mount"]} --bind "$root" "$stage"
while [ "$1" != -- ]; do
  src="$1"
  case "$src" in "$root"/*) [ -z "$root" ] || src="$stage/${{src#"$root"/}}";; esac
  if [ -d "$src" ]; then {tools["mkdir"]} -p "$2"
  else d="${{2%/*}}"; {tools["mkdir"]} -p "${{d:-/}}"; [ -e "$2" ] || : > "$2"; fi
  {tools["mount"]} --bind "$src" "$2"
  [ "$3" = rw ] || {tools["mount"]} -o remount,bind,ro "$2"
  shift 3
done
shift
cmd="$1"; shift
case "$cmd" in "$root"/*) [ -z "$root" ] || cmd="$stage/${{cmd#"$root"/}}";; esac
[ -z "$wd" ] || cd "$wd"
exec "$cmd" "$@"
"""
            wrap = [
                tools["setpriv"],
                "--pdeathsig",
                "KILL",
                tools["unshare"],
                "--mount",
                "--uts",
                "--propagation",
                "private",
                "--",
                tools["sh"],
                "-c",
                script,
            ]
            probe = subprocess.run(
                wrap + ["probe", "", "", "/etc/hosts", "/etc/hosts", "ro", "--", "true"], capture_output=True, text=True
            )
            if probe.returncode == 0:
                return wrap
            why = probe.stderr.strip()
        log.error(
            "no private mount namespace for pods (%s): without it a pod sees neither its "
            "volumes at their mount paths nor its hosts file; run the agent as root with "
            "util-linux installed",
            why,
        )
        raise SystemExit(1)

    def setup(self):
        self.state.mkdir(parents=True, exist_ok=True)
        # The binaries that stand in for images are run from the state folder, which pods
        # reach through the staging bind: a pod's emptyDir at /tmp would hide a binary that
        # lives under /tmp (a CI clone) from its own process.
        bins = self.state / "bin"
        bins.mkdir(exist_ok=True)
        staged = []
        for i, (prefix, binary) in enumerate(self.images):
            dest = bins / str(i) / Path(binary).name  # same name: command[0] is matched by it
            dest.parent.mkdir(exist_ok=True)
            dest.unlink(missing_ok=True)
            try:
                os.link(binary, dest)
            except OSError:
                shutil.copy2(binary, dest)
            staged.append((prefix, str(dest)))
        self.images = staged
        self.server_version = self.api.get("/version")["gitVersion"]
        sc = {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": PROVISIONER,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
        }
        self.create_ok("/apis/storage.k8s.io/v1/storageclasses", sc)
        for i, n in enumerate(self.nodes):
            labels = {
                "kubernetes.io/hostname": n,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "topology.kubernetes.io/zone": f"zone-{i}",
            }
            node = self.create_ok(
                "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": n, "labels": labels}}
            )
            if node is None:  # exists from an earlier run: keep our labels on it
                node = self.api.patch(f"/api/v1/nodes/{n}", {"metadata": {"labels": labels}})
            self.node_uids[n] = node["metadata"]["uid"]
        self.heartbeat()
        for kind, path in (
            ("pod", "/api/v1/pods"),
            ("pvc", "/api/v1/persistentvolumeclaims"),
            ("pv", "/api/v1/persistentvolumes"),
        ):
            threading.Thread(
                target=watcher, args=(self.api, kind, path, self.q, self.stop), daemon=True, name=f"watch-{kind}"
            ).start()
        threading.Thread(target=self.prober, daemon=True, name="prober").start()
        log.info(
            "nodes %s ready; images %s; pods in %s",
            ", ".join(self.nodes),
            ", ".join(f"{p}*={b}" for p, b in self.images),
            self.state / "pods",
        )

    def create_ok(self, path, body):
        """Create; None if it already exists."""
        try:
            return self.api.create(path, body)
        except ApiError as e:
            if e.status != 409:
                raise
            return None

    # --- nodes ------------------------------------------------------------------
    def heartbeat(self):
        """Node status and Lease: the node-lifecycle controller marks a node NotReady (and
        evicts its pods) when its Lease is not renewed within the grace period."""
        now, u = now_iso(), os.uname()
        cap = {
            "cpu": self.args.cpu,
            "memory": self.args.memory,
            "pods": str(self.args.max_pods),
            "ephemeral-storage": "100Gi",
        }
        for n in self.nodes:
            conds = [
                ("Ready", "True", "KubeletReady", "fjord e2e node agent is posting ready status"),
                ("MemoryPressure", "False", "KubeletHasSufficientMemory", ""),
                ("DiskPressure", "False", "KubeletHasNoDiskPressure", ""),
                ("PIDPressure", "False", "KubeletHasSufficientPID", ""),
            ]
            status = {
                "capacity": cap,
                "allocatable": cap,
                "conditions": [
                    {
                        "type": t,
                        "status": s,
                        "reason": r,
                        "message": m,
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": self.transition(("node", n, t), s),
                    }
                    for t, s, r, m in conds
                ],
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": n}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
                "nodeInfo": {
                    "machineID": n,
                    "systemUUID": n,
                    "bootID": n,
                    "kernelVersion": u.release,
                    "osImage": "fjord e2e node agent",
                    "containerRuntimeVersion": RUNTIME,
                    "kubeletVersion": self.server_version,
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                },
            }
            self.api.patch(f"/api/v1/nodes/{n}/status", {"status": status})
            lease = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{n}"
            spec = {"holderIdentity": n, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now_iso(True)}
            try:
                self.api.patch(lease, {"spec": spec})
            except ApiError as e:
                if e.status != 404:
                    raise
                self.create_ok(
                    lease.rsplit("/", 1)[0],
                    {
                        "metadata": {
                            "name": n,
                            "ownerReferences": [
                                {"apiVersion": "v1", "kind": "Node", "name": n, "uid": self.node_uids[n]}
                            ],
                        },
                        "spec": spec,
                    },
                )

    def transition(self, key, status):
        """lastTransitionTime: when this condition last changed status."""
        old = self._transitions.get(key)
        if old is None or old[0] != status:
            self._transitions[key] = old = (status, now_iso())
        return old[1]

    # --- storage ------------------------------------------------------------------
    def provision(self):
        """Create a pre-bound hostPath PV for each Pending PVC of our class (or of no class)."""
        classes = {}
        for (ns, name), pvc in list(self.pvcs.items()):
            spec, meta = pvc["spec"], pvc["metadata"]
            if (
                (pvc.get("status") or {}).get("phase") != "Pending"
                or spec.get("volumeName")
                or meta.get("deletionTimestamp")
            ):
                continue
            cls = spec.get("storageClassName")
            if cls:
                if cls not in classes:
                    try:
                        classes[cls] = self.api.get(f"/apis/storage.k8s.io/v1/storageclasses/{cls}")
                    except ApiError:
                        classes[cls] = None
                sc = classes[cls]
                if not sc or sc.get("provisioner") != PROVISIONER:
                    continue
                if sc.get(
                    "volumeBindingMode"
                ) == "WaitForFirstConsumer" and "volume.kubernetes.io/selected-node" not in meta.get("annotations", {}):
                    continue
            else:
                sc = {}
            pv_name = f"pvc-{meta['uid']}"
            if pv_name in self.pvs:
                continue
            path = self.state / "volumes" / pv_name
            path.mkdir(parents=True, exist_ok=True)
            pv = {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": pv_name, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
                "spec": {
                    "capacity": {"storage": spec["resources"]["requests"]["storage"]},
                    "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": sc.get("reclaimPolicy", "Delete"),
                    "storageClassName": cls or "",
                    "volumeMode": spec.get("volumeMode", "Filesystem"),
                    "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
                    "claimRef": {
                        "apiVersion": "v1",
                        "kind": "PersistentVolumeClaim",
                        "namespace": ns,
                        "name": name,
                        "uid": meta["uid"],
                    },
                },
            }
            if self.create_ok("/api/v1/persistentvolumes", pv) is not None:
                log.info("provisioned %s for PVC %s/%s at %s", pv_name, ns, name, path)
            self.pvs[pv_name] = pv

    def reclaim(self):
        """Our released PVs with policy Delete: the PV controller waits for their provisioner."""
        for name, pv in list(self.pvs.items()):
            spec = pv["spec"]
            if (
                (pv.get("status") or {}).get("phase") not in ("Released", "Failed")
                or pv["metadata"].get("deletionTimestamp")
                or spec.get("persistentVolumeReclaimPolicy") != "Delete"
                or pv["metadata"].get("annotations", {}).get("pv.kubernetes.io/provisioned-by") != PROVISIONER
            ):
                continue
            path = Path(spec.get("hostPath", {}).get("path", ""))
            if (self.state / "volumes") in path.parents:
                shutil.rmtree(path, ignore_errors=True)
            try:
                self.api.delete(f"/api/v1/persistentvolumes/{name}")
                log.info("deleted released %s", name)
            except ApiError as e:
                if e.status != 404:
                    raise
            self.pvs.pop(name, None)

    # --- API objects a pod refers to ---------------------------------------------
    def fetch(self, kind, ns, name, optional):
        try:
            obj = self.api.get(f"/api/v1/namespaces/{ns}/{kind}s/{name}")
        except ApiError as e:
            if e.status != 404:
                raise
            if optional:
                return None
            raise Missing(f'{kind} "{name}" not found') from None
        if kind == "secret":
            return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        return data

    def field(self, p, path):
        m, s = p.obj["metadata"], p.obj["spec"]
        ref = re.fullmatch(r"metadata\.(labels|annotations)\['(.*)'\]", path)
        if ref:
            return (m.get(ref[1]) or {}).get(ref[2], "")
        return {
            "metadata.name": p.name,
            "metadata.namespace": p.ns,
            "metadata.uid": p.uid,
            "spec.nodeName": s.get("nodeName", ""),
            "spec.serviceAccountName": s.get("serviceAccountName", ""),
            "status.podIP": p.ip or "",
            "status.podIPs": p.ip or "",
            "status.hostIP": "127.0.0.1",
            "status.hostIPs": "127.0.0.1",
            "metadata.labels": "\n".join(f'{k}="{v}"' for k, v in sorted((m.get("labels") or {}).items())),
            "metadata.annotations": "\n".join(f'{k}="{v}"' for k, v in sorted((m.get("annotations") or {}).items())),
        }.get(path, "")

    # --- pods -------------------------------------------------------------------
    def image_binary(self, image):
        return next((b for prefix, b in self.images if image.startswith(prefix)), None)

    def new_pod(self, obj):
        p = Pod(obj)
        s = obj["spec"]
        mk = lambda c, init: Container(c, self.image_binary(c.get("image", "")), init, p.restarts.get(c["name"], 0))  # noqa: E731
        p.init_containers = [mk(c, True) for c in s.get("initContainers") or []]
        p.main_containers = [mk(c, False) for c in s.get("containers") or []]
        p.dir = self.state / "pods" / p.ns / p.name
        unmapped = [c.spec.get("image") for c in p.containers if not c.binary]
        if unmapped:
            p.problem = (
                "ErrImageNeverPull",
                f"the fjord e2e node agent cannot run image {unmapped[0]!r}: no --image-binary prefix matches it",
            )
            for c in p.containers:
                c.waiting = p.problem if not c.binary else ("PodInitializing", "")
        return p

    def allocate_ip(self, p):
        if p.obj["spec"].get("hostNetwork"):
            return "127.0.0.1"
        used = {q.ip for q in self.pods.values() if q.ip}
        base = self.args.ip_base
        old = (p.obj.get("status") or {}).get("podIP") or ""
        if old.startswith(base) and old not in used:  # the agent restarted: keep the pod's address
            return old
        for _ in range(253):  # round robin: a new pod does not get a just-deleted pod's address
            ip = f"{base}{self.next_ip}"
            self.next_ip = self.next_ip + 1 if self.next_ip < 254 else 2
            if ip not in used:
                return ip
        raise RuntimeError(f"no free pod address left in {base}2-254")

    def prepare(self, p):
        """Pod-level setup before the first container starts: address, folders, volumes."""
        s = p.obj["spec"]
        p.ip = p.ip or self.allocate_ip(p)
        (p.dir / "volumes").mkdir(parents=True, exist_ok=True)
        vols = {}
        for v in s.get("volumes") or []:
            name, d = v["name"], p.dir / "volumes" / v["name"]
            if "persistentVolumeClaim" in v:
                claim = v["persistentVolumeClaim"]["claimName"]
                pvc = self.pvcs.get((p.ns, claim))
                pv = self.pvs.get((pvc or {}).get("spec", {}).get("volumeName") or "")
                if not pv or (pvc.get("status") or {}).get("phase") != "Bound":
                    raise Missing(f'persistentvolumeclaim "{claim}" is not bound')
                d = Path(
                    (pv["spec"].get("hostPath") or pv["spec"].get("local") or {}).get("path")
                    or self.state / "pvc" / p.ns / claim
                )  # keyed by claim: survives the pod
            elif "hostPath" in v:
                d = Path(v["hostPath"]["path"])
            vols[name] = d
        p.vols = vols
        for v in s.get("volumes") or []:
            d = vols[v["name"]]
            if "emptyDir" in v:
                shutil.rmtree(d, ignore_errors=True)  # a new pod starts empty
            if {"configMap", "secret", "downwardAPI", "projected"} & v.keys():
                shutil.rmtree(d, ignore_errors=True)
                d.mkdir(parents=True)
                self.write_volume(p, v, d)
            elif not {"persistentVolumeClaim", "hostPath", "emptyDir"} & v.keys():
                log.warning("pod %s/%s: volume %s of an unsupported type is an empty folder", p.ns, p.name, v["name"])
            if not d.exists():  # (a hostPath may be a file)
                d.mkdir(parents=True)
        p.prepared = True

    def write_volume(self, p, v, d):
        sources = v["projected"]["sources"] if "projected" in v else [v]
        mode = (v.get("projected") or v.get("configMap") or v.get("secret") or v.get("downwardAPI") or {}).get(
            "defaultMode", 0o644
        )
        for src in sources:
            files = {}
            if "configMap" in src or "secret" in src:
                kind = "configMap" if "configMap" in src else "secret"
                ref = src[kind]
                data = (
                    self.fetch(kind.lower(), p.ns, ref.get("name") or ref.get("secretName"), ref.get("optional", False))
                    or {}
                )
                items = ref.get("items")
                if items:
                    for it in items:
                        if it["key"] not in data and not ref.get("optional"):
                            raise Missing(
                                f'key "{it["key"]}" not in {kind} "{ref.get("name") or ref.get("secretName")}"'
                            )
                    files = {it["path"]: (data[it["key"]], it.get("mode")) for it in items if it["key"] in data}
                else:
                    files = {k: (b, None) for k, b in data.items()}
            elif "downwardAPI" in src:
                for it in src["downwardAPI"].get("items") or []:
                    val = self.field(p, it["fieldRef"]["fieldPath"]) if "fieldRef" in it else ""
                    files[it["path"]] = (val.encode(), it.get("mode"))
            elif "serviceAccountToken" in src:
                t = src["serviceAccountToken"]
                sa = p.obj["spec"].get("serviceAccountName", "default")
                req = {
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenRequest",
                    "spec": {
                        "expirationSeconds": t.get("expirationSeconds", 3607),
                        "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": p.name, "uid": p.uid},
                    },
                }
                if t.get("audience"):
                    req["spec"]["audiences"] = [t["audience"]]
                tok = self.api.create(f"/api/v1/namespaces/{p.ns}/serviceaccounts/{sa}/token", req)
                files[t["path"]] = (tok["status"]["token"].encode(), None)
            elif "clusterTrustBundle" not in src:
                log.warning("pod %s/%s: unsupported projected source %s", p.ns, p.name, list(src))
            for rel, (content, m) in files.items():
                f = d / rel
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_bytes(content)
                f.chmod(m if m is not None else mode)

    def container_env(self, p, c):
        env = {}
        for src in c.spec.get("envFrom") or []:
            kind = "configmap" if "configMapRef" in src else "secret"
            ref = src.get("configMapRef") or src.get("secretRef")
            data = self.fetch(kind, p.ns, ref["name"], ref.get("optional", False)) or {}
            env.update({src.get("prefix", "") + k: v.decode(errors="replace") for k, v in data.items() if "=" not in k})
        for e in c.spec.get("env") or []:
            vf = e.get("valueFrom")
            if vf is None:
                env[e["name"]] = expand(e.get("value", ""), env.get)
            elif "fieldRef" in vf:
                env[e["name"]] = self.field(p, vf["fieldRef"]["fieldPath"])
            elif "configMapKeyRef" in vf or "secretKeyRef" in vf:
                kind = "configmap" if "configMapKeyRef" in vf else "secret"
                ref = vf.get("configMapKeyRef") or vf.get("secretKeyRef")
                data = self.fetch(kind, p.ns, ref["name"], ref.get("optional", False))
                if data is not None and ref["key"] in data:
                    env[e["name"]] = data[ref["key"]].decode(errors="replace")
                elif not ref.get("optional"):
                    raise Missing(f'key "{ref["key"]}" not in {kind} "{ref["name"]}"')
            else:
                log.warning("pod %s/%s: env %s: unsupported valueFrom %s", p.ns, p.name, e["name"], list(vf))
                env[e["name"]] = ""
        return env

    def argv(self, c, env, cmd, args):
        """The binary replaces the image's entrypoint; a command naming another program (sh)
        runs that program from the host."""
        cmd = list(cmd or [])
        if not cmd or os.path.basename(cmd[0]) == os.path.basename(c.binary):
            cmd = [c.binary] + cmd[1:]
        return [expand(a, env.get) for a in cmd + list(args or [])]

    def mounts(self, p, c, env):
        """(source, mountPath, ro|rw) for the container, parents before children (as containerd
        orders them): its volumeMounts (subPath/subPathExpr inside the volume, created if
        missing, as kubelet does) and the pod's hosts file at /etc/hosts. ConfigMap, Secret,
        downwardAPI and projected volumes are read-only, as kubelet mounts them."""
        ro_kinds = {"configMap", "secret", "downwardAPI", "projected"}
        kinds = {v["name"]: v for v in p.obj["spec"].get("volumes") or []}
        out = []
        for vm in c.spec.get("volumeMounts") or []:
            v = kinds.get(vm["name"], {})
            sub = vm.get("subPath") or expand(vm.get("subPathExpr", ""), env.get)
            src = p.vols[vm["name"]] / sub if sub else p.vols[vm["name"]]
            if not src.exists():
                src.mkdir(parents=True)
            ro = (
                vm.get("readOnly")
                or bool(ro_kinds & v.keys())
                or (v.get("persistentVolumeClaim") or {}).get("readOnly", False)
            )
            out.append((str(src), os.path.normpath(vm["mountPath"]), "ro" if ro else "rw"))
        out.append((str(p.dir / "hosts"), "/etc/hosts", "rw"))
        return sorted(out, key=lambda m: len(Path(m[1]).parts))

    def spawn(self, p, c):
        env = self.container_env(p, c)
        c.argv = self.argv(c, env, c.spec.get("command"), c.spec.get("args"))
        c.env = dict(
            {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOSTNAME": p.hostname,
                "KUBERNETES_SERVICE_HOST": self.api_host,
                "KUBERNETES_SERVICE_PORT": self.api_port,
            },
            **env,
        )
        mounts = self.mounts(p, c, env)
        self.write_hosts(p)
        c.run_id += 1
        with open(p.dir / f"{c.name}.log", "ab") as out:
            out.write(
                f"===== {now_iso()} node agent: pod uid {p.uid}, start #{c.run_id}: {' '.join(c.argv)}\n"
                f"===== mounts: {', '.join(f'{t} <- {s} ({m})' for s, t, m in mounts)}\n".encode()
            )
            out.flush()
            wrap = (
                self.wrap
                + [p.hostname, c.spec.get("workingDir") or "", str(self.state.resolve())]
                + [x for m in mounts for x in m]
                + ["--"]
            )
            c.proc = subprocess.Popen(
                wrap + c.argv,
                cwd=p.dir,
                env=c.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        c.started_at, c.waiting, c.ready = now_iso(), None, False
        c.restarts += c.exit is not None  # every start after an exit is a restart
        probe = c.spec.get("readinessProbe") or {}
        c.probe = {"ok": 0, "fail": 0, "due": time.monotonic() + probe.get("initialDelaySeconds", 0)}
        log.info("pod %s/%s: started %s (pid %d, ip %s)", p.ns, p.name, c.name, c.proc.pid, p.ip)

    def reap(self, p, c):
        """Record an exited process; plan its restart as restartPolicy says."""
        code = c.proc.returncode
        code = 128 - code if code < 0 else code
        c.last_exit, c.exit = (
            c.exit,
            (code, "Completed" if code == 0 else "Error", c.started_at, now_iso(), f"process://{c.proc.pid}"),
        )
        ran = time.monotonic() - c.spawned_at
        c.proc, c.ready = None, False
        policy = p.obj["spec"].get("restartPolicy", "Always")
        if p.obj["metadata"].get("deletionTimestamp") or p.gone:
            c.done = True
        elif c.init:
            c.done = code == 0 or policy == "Never"
        else:
            c.done = policy == "Never" or (policy == "OnFailure" and code == 0)
        if not c.done:
            c.backoff = 1.0 if ran > 60 or not c.backoff else min(c.backoff * 2, BACKOFF_MAX)
            c.next_start = time.monotonic() + c.backoff
            c.waiting = (
                "CrashLoopBackOff",
                f"back-off {c.backoff:.0f}s restarting failed container={c.name} pod={p.name}_{p.ns}({p.uid})",
            )
        log.info(
            "pod %s/%s: %s exited with %d after %.1fs%s",
            p.ns,
            p.name,
            c.name,
            code,
            ran,
            "" if c.done else f"; restart in {c.backoff:.0f}s",
        )

    def step(self, p):
        now = time.monotonic()
        meta = p.obj["metadata"]
        if p.gone or meta.get("deletionTimestamp"):
            return self.terminate(p)
        for c in p.containers:
            if c.proc is not None and c.proc.poll() is not None:
                self.reap(p, c)
        if p.problem and p.problem[0] == "ErrImageNeverPull":
            return
        if now < p.retry_at:
            return
        try:
            if not p.prepared:
                self.prepare(p)
            todo = next((c for c in p.init_containers if not c.done), None)
            for c in [todo] if todo else p.main_containers:
                if c.proc is None and not c.done and now >= c.next_start:
                    c.spawned_at = now
                    self.spawn(p, c)
            p.problem = None
        except Missing as e:
            p.problem, p.retry_at = ("CreateContainerConfigError", str(e)), now + 2
            for c in p.containers:
                if c.proc is None and c.waiting:
                    c.waiting = p.problem
        except (ApiError, OSError) as e:
            log.warning("pod %s/%s: %s (retrying)", p.ns, p.name, e)
            p.problem, p.retry_at = ("ContainerCreating", str(e)), now + 2

    def terminate(self, p):
        """As kubelet: SIGTERM, SIGKILL after the grace period, then delete the pod object
        with grace 0 and a uid precondition (never a newer pod of the same name)."""
        if p.term_deadline is None:
            m, s = p.obj["metadata"], p.obj["spec"]
            grace = m.get("deletionGracePeriodSeconds", s.get("terminationGracePeriodSeconds", 30))
            p.term_deadline = time.monotonic() + (grace or 0)
            for c in p.processes():
                log.info("pod %s/%s: SIGTERM %s (grace %ss)", p.ns, p.name, c.name, grace)
                _signal(c.proc, signal.SIGTERM)
        if time.monotonic() >= p.term_deadline and not p.killed:
            for c in p.processes():
                log.info("pod %s/%s: SIGKILL %s", p.ns, p.name, c.name)
                _signal(c.proc, signal.SIGKILL)
            p.killed = True
        for c in p.containers:
            if c.proc is not None and c.proc.poll() is not None:
                self.reap(p, c)
        if p.processes():
            return
        if not p.gone:
            try:
                self.api.delete(
                    f"/api/v1/namespaces/{p.ns}/pods/{p.name}",
                    {"gracePeriodSeconds": 0, "preconditions": {"uid": p.uid}},
                )
            except ApiError as e:
                if e.status not in (404, 409):
                    raise
        p.removed = True

    def sync_pods(self):
        self.removed &= self.api_pods.keys()
        for uid, obj in self.api_pods.items():
            p = self.pods.get(uid)
            if p is None and uid not in self.removed:
                if (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed") and not obj["metadata"].get(
                    "deletionTimestamp"
                ):
                    continue  # finished before we (re)started: nothing to run
                p = self.pods[uid] = self.new_pod(obj)
            if p is not None:
                p.obj = obj
        for uid, p in list(self.pods.items()):
            p.gone = uid not in self.api_pods
            try:
                self.step(p)
            except Exception:  # noqa: BLE001 - one pod must not stop the others
                log.exception("pod %s/%s", p.ns, p.name)
            if p.removed:
                del self.pods[uid]
                self.removed.add(uid)
                for t in OWN_CONDITIONS:
                    self._transitions.pop((uid, t), None)
                log.info("pod %s/%s: removed", p.ns, p.name)

    # --- hosts files -------------------------------------------------------------
    def write_hosts_all(self):
        for p in self.pods.values():
            if p.prepared and p.hosts_text is not None:
                self.write_hosts(p)

    def write_hosts(self, p):
        lines = [
            f"# {p.ns}/{p.name}: written by the fjord e2e node agent",
            "127.0.0.1\tlocalhost",
            "::1\tlocalhost ip6-localhost ip6-loopback",
        ]
        if not p.subdomain:
            lines.append(f"{p.ip}\t{p.hostname}")
        for q in sorted(self.pods.values(), key=lambda q: q.name):
            if q.ns == p.ns and q.ip and q.subdomain and q.prepared and not q.removed:
                h, s = q.hostname, f"{q.hostname}.{q.subdomain}"
                lines.append(f"{q.ip}\t{s}.{q.ns}.svc.cluster.local {s}.{q.ns}.svc {s}" + (f" {h}" if q is p else ""))
        text = "\n".join(lines) + "\n"
        if text != p.hosts_text:
            f = p.dir / "hosts"
            # In place (same inode): the running processes see it through their bind mount.
            with open(f, "r+" if f.exists() else "w") as fh:
                fh.write(text)
                fh.truncate()
            p.hosts_text = text

    # --- status -------------------------------------------------------------------
    def container_status(self, p, c):
        st = {
            "name": c.name,
            "image": c.spec.get("image", ""),
            "imageID": f"file://{c.binary or ''}",
            "ready": c.is_ready,
            "started": c.running,
            "restartCount": c.restarts,
        }
        if c.running:
            st["containerID"] = f"process://{c.proc.pid}"
            st["state"] = {"running": {"startedAt": c.started_at}}
        elif c.waiting and not (c.done and c.exit):
            st["state"] = {"waiting": {"reason": c.waiting[0], "message": c.waiting[1]}}
        elif c.exit:
            st["state"] = {"terminated": _term(c.exit)}
        else:
            st["state"] = {"waiting": {"reason": "ContainerCreating"}}
        last = c.exit if (c.running or not c.done) else c.last_exit
        st["lastState"] = {"terminated": _term(last)} if last else {}
        if c.exit and "containerID" not in st:
            st["containerID"] = c.exit[4]
        return st

    def pod_status(self, p):
        spec = p.obj["spec"]
        init_done = all(c.done and c.exit and c.exit[0] == 0 for c in p.init_containers)
        mains = p.main_containers
        cready = init_done and all(c.is_ready for c in mains)
        gates = [g["conditionType"] for g in spec.get("readinessGates") or []]
        theirs = [c for c in (p.obj.get("status") or {}).get("conditions") or [] if c["type"] not in OWN_CONDITIONS]
        ready = cready and all(any(c["type"] == g and c["status"] == "True" for c in theirs) for g in gates)
        if any(c.exit is None and not c.running for c in mains) or not init_done:
            phase = "Pending"
        elif all(c.done for c in mains):
            phase = "Succeeded" if all(c.exit[0] == 0 for c in mains) else "Failed"
        else:
            phase = "Running"
        status = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "startTime": p.start_time,
            "conditions": list(theirs),
            "containerStatuses": [self.container_status(p, c) for c in mains],
        }
        if p.init_containers:
            status["initContainerStatuses"] = [self.container_status(p, c) for c in p.init_containers]
        if p.ip and any(c.exit or c.running for c in p.containers):
            status.update(podIP=p.ip, podIPs=[{"ip": p.ip}])
        for t, ok in zip(OWN_CONDITIONS, (True, init_done, cready, ready), strict=True):
            s = "True" if ok else "False"
            cond = {"type": t, "status": s, "lastProbeTime": None, "lastTransitionTime": self.transition((p.uid, t), s)}
            if not ok and t != "Initialized":
                cond["reason"] = "ContainersNotReady"
            status["conditions"].append(cond)
        return status

    def write_statuses(self):
        for p in list(self.pods.values()):
            if p.gone or p.removed:
                continue
            st = self.pod_status(p)
            if st == p.last_status:
                continue
            try:  # metadata.uid in the patch: a same-named newer pod is never written to
                self.api.patch(
                    f"/api/v1/namespaces/{p.ns}/pods/{p.name}/status", {"metadata": {"uid": p.uid}, "status": st}
                )
                p.last_status = st
            except ApiError as e:
                if e.status not in (404, 409, 422):
                    raise
                (log.warning if e.status == 422 else log.info)("pod %s/%s: status not written: %s", p.ns, p.name, e)

    # --- readiness probes (own thread: a slow probe must not hold up the others) ----
    def prober(self):
        while not self.stop.is_set():
            with self.lock:
                due = [
                    (p, c, c.run_id, c.spec["readinessProbe"])
                    for p in self.pods.values()
                    for c in p.main_containers
                    if c.running and c.spec.get("readinessProbe") and time.monotonic() >= c.probe["due"]
                ]
            for p, c, run_id, pr in due:
                ok = self.probe(p, c, pr)
                with self.lock:
                    if c.run_id != run_id or not c.running:
                        continue
                    c.probe["ok"], c.probe["fail"] = (c.probe["ok"] + 1, 0) if ok else (0, c.probe["fail"] + 1)
                    if c.probe["ok"] >= pr.get("successThreshold", 1):
                        c.ready = True
                    elif c.probe["fail"] >= pr.get("failureThreshold", 3):
                        c.ready = False
                    c.probe["due"] = time.monotonic() + pr.get("periodSeconds", 10)
            time.sleep(0.1)

    def probe(self, p, c, pr):
        timeout = pr.get("timeoutSeconds", 1)
        try:
            if "httpGet" in pr:
                g = pr["httpGet"]
                port = self.port(c, g["port"])
                url = f"{g.get('scheme', 'HTTP').lower()}://{g.get('host') or p.ip}:{port}{g.get('path', '/')}"
                req = urllib.request.Request(url, headers={h["name"]: h["value"] for h in g.get("httpHeaders") or []})
                opener = urllib.request.build_opener(
                    urllib.request.ProxyHandler({}),
                    urllib.request.HTTPSHandler(context=ssl._create_unverified_context()),
                )
                try:
                    with opener.open(req, timeout=timeout) as r:
                        return 200 <= r.status < 400
                except urllib.error.HTTPError as e:
                    return 200 <= e.code < 400
            if "tcpSocket" in pr:
                t = pr["tcpSocket"]
                with socket.create_connection((t.get("host") or p.ip, self.port(c, t["port"])), timeout=timeout):
                    return True
            if "exec" in pr:
                # In the container's namespaces and working directory, as kubelet's exec.
                argv = [self.nsenter, "--target", str(c.proc.pid), "--mount", "--uts", "--wd", "--"] + self.argv(
                    c, c.env, pr["exec"]["command"], []
                )
                return subprocess.run(argv, env=c.env, cwd=p.dir, capture_output=True, timeout=timeout).returncode == 0
            return True  # grpc: not supported, counts as passing
        except Exception:  # noqa: BLE001 - whatever broke (refused, timeout, no such port name) is a failure
            return False

    @staticmethod
    def port(c, port):
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        return next(cp["containerPort"] for cp in c.spec.get("ports") or [] if cp.get("name") == port)

    # --- main loop ----------------------------------------------------------------
    def apply(self, kind, typ, data):
        ours = lambda o: (o.get("spec") or {}).get("nodeName") in self.node_uids  # noqa: E731
        key = {
            "pod": lambda o: o["metadata"]["uid"],
            "pvc": lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]),
            "pv": lambda o: o["metadata"]["name"],
        }[kind]
        cache = {"pod": self.api_pods, "pvc": self.pvcs, "pv": self.pvs}[kind]
        if typ == "SYNC":
            cache.clear()
            cache.update({key(o): o for o in data if kind != "pod" or ours(o)})
        elif typ == "DELETED":
            cache.pop(key(data), None)
        elif kind != "pod" or ours(data):
            cache[key(data)] = data

    def run(self):
        self.setup()
        next_beat = time.monotonic() + HEARTBEAT_SECONDS
        while not self.stop.is_set():
            try:
                item = self.q.get(timeout=0.3)
                while True:
                    self.apply(*item)
                    item = self.q.get_nowait()
            except queue.Empty:
                pass
            with self.lock:
                steps = [self.provision, self.reclaim, self.sync_pods, self.write_hosts_all, self.write_statuses]
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + HEARTBEAT_SECONDS
                    steps.insert(0, self.heartbeat)
                for fn in steps:
                    try:
                        fn()
                    except Exception:  # noqa: BLE001 - logged; the loop goes on
                        log.exception("%s failed", fn.__name__)
        self.shutdown()

    def shutdown(self):
        procs = [c.proc for p in self.pods.values() for c in p.processes()]
        log.info("stopping: SIGTERM to %d processes", len(procs))
        for pr in procs:
            _signal(pr, signal.SIGTERM)
        deadline = time.monotonic() + self.args.shutdown_grace
        while any(pr.poll() is None for pr in procs) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pr in procs:
            if pr.poll() is None:
                _signal(pr, signal.SIGKILL)
                pr.wait()


def _term(e):
    return {"exitCode": e[0], "reason": e[1], "startedAt": e[2], "finishedAt": e[3], "containerID": e[4]}


def _signal(proc, sig):
    try:
        os.killpg(proc.pid, sig)  # the whole process group: a shell's children too
    except ProcessLookupError:
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--state", required=True, help="folder for pod folders, volumes, hosts files")
    ap.add_argument("--nodes", type=int, default=1)
    ap.add_argument("--node-prefix", default="fjord-e2e")
    ap.add_argument("--image-binary", action="append", default=[], metavar="IMAGE_PREFIX=BINARY")
    ap.add_argument("--ip-base", default="127.0.10.", help="pod IPs: IP_BASE2 .. IP_BASE254")
    ap.add_argument("--cpu", default="8")
    ap.add_argument("--memory", default="32Gi")
    ap.add_argument("--max-pods", type=int, default=110)
    ap.add_argument("--shutdown-grace", type=float, default=10.0)
    args = ap.parse_args()
    for spec in args.image_binary:
        prefix, _, binary = spec.partition("=")
        if not prefix or not os.access(binary, os.X_OK):
            ap.error(f"--image-binary {spec}: want IMAGE_PREFIX=EXECUTABLE")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    agent = Agent(args)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.stop.set())
    agent.run()


if __name__ == "__main__":
    main()
