"""A private network for a cluster under network partitions: each node in a network namespace
of its own, the clients in another, all linked by a bridge in a namespace of its own, so that
links between nodes can be cut with nftables while the clients still reach every node.

    net = Network.create("fj1234", nodes=3)          # needs root: ip netns, veth, bridge
    net.node_ip(2)                                   # "198.18.0.12"
    net.wrap(2, ["fjord", "broker", ...])            # the command run inside node 2's namespace
    net.cut({1}, {2, 3})                             # drop every packet between 1 and 2, 3
    net.cut_ports([(1, 2)], {1: 9093, 2: 9093})      # only traffic to those TCP ports, 1 <-> 2
    net.heal()                                       # remove every cut
    net.destroy()

The code that drives the clients runs inside the client namespace (`net.client_ns`: see
e2e/checker/checker.py, which re-executes itself there). Nothing here touches the machine's own
network namespace: the addresses (198.18.0.0/24, the range set aside for network tests) exist
only inside these namespaces, and every packet stays in them.
"""

import os
import shutil
import subprocess
import sys

SUBNET = "198.18.0"
CLIENT_HOST = 2


def _run(*cmd, ns=None, check=True, input=None):
    full = (["ip", "netns", "exec", ns] if ns else []) + [str(c) for c in cmd]
    p = subprocess.run(full, capture_output=True, text=True, input=input, timeout=30)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(full)} failed ({p.returncode}): {p.stderr.strip()}")
    return p


def problem():
    """Why partitions cannot be made on this machine, or None."""
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"`{tool}` is missing (e2e/provision/clients installs iproute2 and nftables)"
    p = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if p.returncode != 0:
        return f"ip netns does not work here: {p.stderr.strip()}"
    return None


class Network:
    def __init__(self, prefix, nodes):
        self.prefix = prefix
        self.ids = list(range(1, nodes + 1))
        self.switch_ns = f"{prefix}-sw"
        self.client_ns = f"{prefix}-c"

    def node_ns(self, i):
        return f"{self.prefix}-n{i}"

    @staticmethod
    def node_ip(i):
        return f"{SUBNET}.{10 + i}"

    client_ip = f"{SUBNET}.{CLIENT_HOST}"

    @classmethod
    def create(cls, prefix, nodes):
        net = cls(prefix, nodes)
        try:
            net._build()
        except BaseException:
            net.destroy()
            raise
        return net

    def _build(self):
        _run("ip", "netns", "add", self.switch_ns)
        _run("ip", "link", "add", "br0", "type", "bridge", ns=self.switch_ns)
        _run("ip", "link", "set", "br0", "up", ns=self.switch_ns)
        members = [(self.client_ns, self.client_ip, "c")] + [
            (self.node_ns(i), self.node_ip(i), f"n{i}") for i in self.ids
        ]
        for ns, ip, tag in members:
            _run("ip", "netns", "add", ns)
            _run("ip", "link", "set", "lo", "up", ns=ns)
            # The pair is made inside the switch namespace, one end then moved: no interface
            # ever appears in the machine's own namespace.
            _run("ip", "link", "add", f"v{tag}", "type", "veth", "peer", "name", "eth0", ns=self.switch_ns)
            _run("ip", "link", "set", "eth0", "netns", ns, ns=self.switch_ns)
            _run("ip", "link", "set", f"v{tag}", "master", "br0", "up", ns=self.switch_ns)
            _run("ip", "addr", "add", f"{ip}/24", "dev", "eth0", ns=ns)
            _run("ip", "link", "set", "eth0", "up", ns=ns)
        for i in self.ids:
            rules = (
                "table inet fjord {\n"
                "  chain input { type filter hook input priority 0; policy accept; }\n"
                "  chain output { type filter hook output priority 0; policy accept; }\n"
                "}\n"
            )
            _run("nft", "-f", "-", ns=self.node_ns(i), input=rules)

    def wrap(self, i, cmd):
        """`cmd` run inside node i's namespace (ip netns exec replaces itself with it, so the pid
        is the node's)."""
        return ["ip", "netns", "exec", self.node_ns(i), *map(str, cmd)]

    def _drop(self, rules):
        """Add drop rules {node id: [(output match, input match)]}, one nft transaction per node."""
        for i, pairs in rules.items():
            script = "".join(
                f"add rule inet fjord output {out} drop\nadd rule inet fjord input {inp} drop\n" for out, inp in pairs
            )
            _run("nft", "-f", "-", ns=self.node_ns(i), input=script)

    def cut(self, side_a, side_b):
        """Drop every packet between the nodes of side_a and those of side_b (both directions),
        as a switch that loses a link does: no reset, no error, only silence."""
        rules = {}
        for a in side_a:
            for b in side_b:
                rules.setdefault(a, []).append((f"ip daddr {self.node_ip(b)}", f"ip saddr {self.node_ip(b)}"))
                rules.setdefault(b, []).append((f"ip daddr {self.node_ip(a)}", f"ip saddr {self.node_ip(a)}"))
        self._drop(rules)

    def cut_ports(self, pairs, ports):
        """Drop TCP traffic to `ports` ({node id: port}, e.g. the controller listeners) between
        the two nodes of each pair, both ways; every other link stays up."""
        rules = {}
        for a, b in pairs:
            for x, y in ((a, b), (b, a)):
                rules.setdefault(x, []).append(
                    (
                        f"ip daddr {self.node_ip(y)} tcp dport {ports[y]}",
                        f"ip saddr {self.node_ip(y)} tcp dport {ports[x]}",
                    )
                )
        self._drop(rules)

    def heal(self):
        for i in self.ids:
            for chain in ("input", "output"):
                _run("nft", "flush", "chain", "inet", "fjord", chain, ns=self.node_ns(i))

    def rules(self):
        """{node id: nft ruleset text}, for reports."""
        return {i: _run("nft", "list", "table", "inet", "fjord", ns=self.node_ns(i)).stdout for i in self.ids}

    def destroy(self):
        """Remove the namespaces (their interfaces go with them). Processes still inside keep
        theirs alive until they exit: stop the nodes first."""
        for ns in [self.client_ns, *map(self.node_ns, self.ids), self.switch_ns]:
            _run("ip", "netns", "del", ns, check=False)


def run_inside(script, argv, nodes, flag="--netns"):
    """Build a network for `nodes` nodes, run `script` again with `argv` plus `flag NAME` inside
    its client namespace (its clients then reach the nodes only through the network the cuts
    act on), and tear the network down; returns the exit code (2 when it cannot be built)."""
    why = problem()
    if why:
        print(f"ERROR: network partitions need network namespaces and nftables: {why}", flush=True)
        return 2
    net = Network.create(f"fj{os.getpid() % 100000}", nodes)
    try:
        cmd = ["ip", "netns", "exec", net.client_ns, sys.executable, str(script), *argv, flag, net.prefix]
        return subprocess.run(cmd).returncode
    finally:
        net.destroy()
