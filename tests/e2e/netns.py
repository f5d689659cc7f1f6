"""Network-namespace topology for the isolation tests: several "hosts" on one
machine, each with its own address, joined by a bridge, and faults cut into
them with nftables.

    root namespace        (untouched, except a blackhole route for the subnet)

    qv<S>-br   bridge "br0" ── v-b1 ─┐ ── v-b2 ─┐ ── v-clients ─┐  (pure L2, no address)
                                     │          │               │
    qv<S>-b1   eth0 10.231.S.11 ─────┘          │               │
    qv<S>-b2   eth0 10.231.S.12 ────────────────┘               │
    qv<S>-clients  eth0 10.231.S.100 ───────────────────────────┘

S is a slot held by an flock (like harness.PortSlot), so parallel runs get their
own namespaces and their own /24. Every host namespace is reachable only from
the other namespaces of the same topology: the root namespace has no interface
on the subnet, and a blackhole route for it makes sure nothing from the root
namespace can ever leave through the default route toward it (TESTING.md's
traffic rules). Everything is removed on close(), also when a test fails (the
fixtures call it in a finally, and an atexit hook backs that up); a slot whose
previous owner died without cleaning up is cleaned when it is taken again.

Faults live inside the host's own namespace (table `inet quiver_fault`), so
they vanish with it:
- isolate(name)              drop everything but loopback
- isolate(name, peers=[...]) drop only traffic to/from those hosts (a partial
                             partition: clients still reach the host)
- loss(name, percent)        drop that share of packets, at random, both ways
- loss(name, percent, peers=[...])
                             drop that share of the packets the host sends to
                             those hosts only (one direction of each link, so a
                             link between two lossy hosts loses `percent` each way)
- heal(name)                 remove the host's fault rules

Processes go into a namespace with `ip netns exec <ns> cmd` (popen/run; ip
execs the command, so the child's pid is the command's own). In-process code
that must talk to the hosts (the harness's Metadata and /v1/cluster queries)
runs on a thread moved into the clients namespace (NetnsThread): a network
namespace is per thread on Linux, and sockets (and librdkafka threads) created
on that thread stay in it.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import ctypes
import fcntl
import os
import signal
import subprocess
from pathlib import Path
from typing import Callable, Optional

SUBNET_PREFIX = os.environ.get("QUIVER_E2E_NETNS_PREFIX", "10.231")  # slot S uses <prefix>.S.0/24
SLOTS = 64
LOCK_DIR = Path(os.environ.get("QUIVER_E2E_NETNS_LOCK_DIR", "/tmp/quiver-e2e-netns"))
CLONE_NEWNET = 0x40000000
FAULT_TABLE = "quiver_fault"
CLIENTS = "clients"


class NetnsError(RuntimeError):
    pass


def _ip(*args: str, check: bool = True, input: Optional[str] = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=30)
    if check and proc.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def netns_list() -> list[str]:
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def routes_for(subnet: str) -> list[str]:
    """Routes of the root namespace for exactly this subnet (e.g. our blackhole)."""
    out = _ip("route", "show", "table", "all", check=False).stdout
    return [line for line in out.splitlines() if subnet in line.split()]


class _Slot:
    """An flock-held slot number: our namespace names and subnet."""

    def __init__(self, prefer: Optional[int] = None):
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        start = os.getpid() % SLOTS if prefer is None else prefer
        for i in range(SLOTS):
            n = (start + i) % SLOTS
            fd = os.open(LOCK_DIR / f"slot-{n}.lock", os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.n, self._fd = n, fd
            return
        raise NetnsError(f"no free network-namespace slot under {LOCK_DIR}")

    def release(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _setns(path: str):
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


class NetnsThread:
    """Runs callables on one thread that lives in a network namespace.

    Everything a callable opens (sockets, a confluent-kafka client and the
    threads librdkafka starts) belongs to that namespace. Objects made there may
    be used from other threads afterwards; only *creating* connections must
    happen here."""

    def __init__(self, ns: str):
        self.ns = ns
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"netns-{ns}", initializer=_setns,
            initargs=(f"/var/run/netns/{ns}",))

    def run(self, fn: Callable, *args, timeout: Optional[float] = None, **kwargs):
        return self._pool.submit(fn, *args, **kwargs).result(timeout)

    def close(self):
        self._pool.shutdown(wait=True, cancel_futures=True)


class Topology:
    """Hosts in their own namespaces on one bridge; see the module doc.

    hosts: names of the hosts (e.g. ["b1", "b2", "b3"]); a "clients" host is
    added unless clients=False. Use as a context manager or call close().
    slot: the slot to try first (tests of the slot handling)."""

    def __init__(self, hosts: list[str], clients: bool = True, slot: Optional[int] = None):
        names = list(hosts) + ([CLIENTS] if clients and CLIENTS not in hosts else [])
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate host names: {names}")
        for name in names:
            # "v-<name>" must fit an interface name (15 bytes)
            if not name.replace("-", "").isalnum() or len(name) > 12:
                raise ValueError(f"host name {name!r}: use up to 12 letters, digits and '-'")
        self._slot = _Slot(slot)
        s = self._slot.n
        self.slot = s
        self.prefix = f"qv{s}-"
        self.subnet = f"{SUBNET_PREFIX}.{s}.0/24"
        self.bridge_ns = self.prefix + "br"
        self.hosts = names
        self._addr = {}
        for i, name in enumerate(names):
            last = 100 if name == CLIENTS else 11 + i
            self._addr[name] = f"{SUBNET_PREFIX}.{s}.{last}"
        self._threads: dict[str, NetnsThread] = {}
        self._procs: list[subprocess.Popen] = []
        self._closed = False
        atexit.register(self.close)
        try:
            self._clean_leftovers()
            self._build()
        except BaseException:
            self.close()
            raise

    # -- names and addresses
    def ns(self, name: str) -> str:
        """The namespace of host `name`."""
        if name not in self._addr:
            raise KeyError(f"no host {name!r} in this topology ({self.hosts})")
        return self.prefix + name

    def addr(self, name: str) -> str:
        return self._addr[name]

    def namespaces(self) -> list[str]:
        return [self.ns(h) for h in self.hosts] + [self.bridge_ns]

    # -- construction
    def _clean_leftovers(self):
        """A slot's previous owner may have died before cleaning up (we hold the
        lock now, so whatever carries our prefix is its leftovers)."""
        for ns in netns_list():
            if ns.startswith(self.prefix):
                self._delete_ns(ns)
        for _ in routes_for(self.subnet):
            _ip("route", "del", "blackhole", self.subnet, check=False)

    def _build(self):
        # first the blackhole, so the subnet is never routable from the root namespace
        _ip("route", "add", "blackhole", self.subnet)
        _ip("netns", "add", self.bridge_ns)
        _ip("-n", self.bridge_ns, "link", "set", "lo", "up")
        _ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.bridge_ns, "link", "set", "br0", "up")
        for name in self.hosts:
            ns = self.ns(name)
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            # both ends are created directly in their namespaces: no interface
            # ever appears in the root namespace
            _ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", f"v-{name}",
                "netns", self.bridge_ns)
            _ip("-n", self.bridge_ns, "link", "set", f"v-{name}", "master", "br0")
            _ip("-n", self.bridge_ns, "link", "set", f"v-{name}", "up")
            _ip("-n", ns, "addr", "add", f"{self.addr(name)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")

    # -- processes inside a host
    def exec_prefix(self, name: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns(name)]

    def popen(self, name: str, cmd: list[str], **kwargs) -> subprocess.Popen:
        """Start cmd inside host `name`; the topology kills it on close() if it
        is still running."""
        proc = subprocess.Popen(self.exec_prefix(name) + list(cmd), **kwargs)
        self._procs.append(proc)
        return proc

    def run(self, name: str, cmd: list[str], check: bool = True, timeout: float = 60,
            input: Optional[str] = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.exec_prefix(name) + list(cmd), input=input, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise NetnsError(f"in {name}: {' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def thread(self, name: str = CLIENTS) -> NetnsThread:
        """The (one, lazily started) in-process thread living in host `name`."""
        if name not in self._threads:
            self._threads[name] = NetnsThread(self.ns(name))
        return self._threads[name]

    # -- faults
    def _nft(self, name: str, script: str):
        self.run(name, ["nft", "-f", "-"], input=script)

    def isolate(self, name: str, peers: Optional[list[str]] = None):
        """Cut host `name` off: from everyone (peers=None) or only from `peers`.
        Replaces any fault already set on the host."""
        self.heal(name)
        if peers is None:
            rules_in, rules_out, policy = 'iif "lo" accept', 'oif "lo" accept', "drop"
        else:
            addrs = ", ".join(self.addr(p) for p in peers)
            rules_in, rules_out, policy = f"ip saddr {{ {addrs} }} drop", f"ip daddr {{ {addrs} }} drop", "accept"
        self._nft(name, f"""
table inet {FAULT_TABLE} {{
    chain input {{ type filter hook input priority -10; policy {policy}; {rules_in}; }}
    chain output {{ type filter hook output priority -10; policy {policy}; {rules_out}; }}
}}
""")

    def loss(self, name: str, percent: int, peers: Optional[list[str]] = None):
        """Drop `percent` % of the host's packets (not loopback), in and out, at random;
        with peers, only of the packets it sends to those hosts."""
        if not 0 <= percent <= 100:
            raise ValueError("percent must be 0..100")
        self.heal(name)
        # numgen's values are 0..99, so "< 100" is out of its range: 100 % is a plain drop
        rule = "drop" if percent == 100 else f"numgen random mod 100 < {percent} drop"
        if peers is not None:
            addrs = ", ".join(self.addr(p) for p in peers)
            self._nft(name, f"""
table inet {FAULT_TABLE} {{
    chain output {{ type filter hook output priority -10; policy accept; ip daddr {{ {addrs} }} {rule}; }}
}}
""")
            return
        self._nft(name, f"""
table inet {FAULT_TABLE} {{
    chain input {{ type filter hook input priority -10; policy accept; iif "lo" accept; {rule}; }}
    chain output {{ type filter hook output priority -10; policy accept; oif "lo" accept; {rule}; }}
}}
""")

    def heal(self, name: str):
        """Remove every fault rule of host `name` (no-op if there is none)."""
        have = self.run(name, ["nft", "list", "tables"], check=False).stdout
        if f"inet {FAULT_TABLE}" in have:
            self.run(name, ["nft", "delete", "table", "inet", FAULT_TABLE])

    def faults(self, name: str) -> str:
        """The fault rules currently set on host `name` ("" if none)."""
        proc = self.run(name, ["nft", "list", "table", "inet", FAULT_TABLE], check=False)
        return proc.stdout if proc.returncode == 0 else ""

    # -- teardown
    @staticmethod
    def _delete_ns(ns: str):
        # whatever still runs inside is ours (only we start processes in our
        # namespaces); kill it by pid so the namespace really goes away
        pids = _ip("netns", "pids", ns, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        _ip("netns", "del", ns, check=False)

    def close(self):
        if self._closed:
            return
        self._closed = True
        try:
            for t in self._threads.values():
                t.close()
            for proc in self._procs:
                if proc.poll() is None:
                    proc.kill()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pass
            # hosts before the bridge: deleting a host namespace removes its veth pair
            for ns in [self.ns(h) for h in self.hosts] + [self.bridge_ns]:
                if ns in netns_list():
                    self._delete_ns(ns)
            for _ in routes_for(self.subnet):
                _ip("route", "del", "blackhole", self.subnet, check=False)
        finally:
            leftovers = [ns for ns in netns_list() if ns.startswith(self.prefix)]
            self._slot.release()
            atexit.unregister(self.close)
        if leftovers:
            raise NetnsError(f"namespaces left behind: {leftovers}")

    def __enter__(self) -> "Topology":
        return self

    def __exit__(self, *exc):
        self.close()
