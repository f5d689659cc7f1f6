"""The namespace topology the isolation tests stand on, tested on its own (no
broker): hosts reach each other over the bridge, isolate() cuts a host off and
heal() restores it, a partial isolate cuts only the named peers, the root
namespace cannot reach the subnet, and close() leaves nothing behind."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

import netns

pytestmark = pytest.mark.timeout(120)

# A TCP server that answers every connection with "hello from <addr>" and
# counts UDP datagrams ("count?" returns how many arrived). Prints "ready"
# once both sockets listen.
SERVER = r"""
import socket, sys, threading
addr, port = sys.argv[1], int(sys.argv[2])
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind((addr, port))
count = [0]
def udp_loop():
    while True:
        data, peer = udp.recvfrom(2048)
        if data == b"count?":
            udp.sendto(str(count[0]).encode(), peer)
        else:
            count[0] += 1
threading.Thread(target=udp_loop, daemon=True).start()
tcp = socket.socket(); tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind((addr, port)); tcp.listen(16)
print("ready", flush=True)
while True:
    c, _ = tcp.accept()
    c.sendall(b"hello from " + addr.encode()); c.close()
"""

PORT = 7777


def tcp_hello(addr: str, timeout: float = 1.0):
    """The server's greeting, or the OSError that stopped us."""
    try:
        with socket.create_connection((addr, PORT), timeout=timeout) as s:
            return s.recv(100).decode()
    except OSError as e:
        return e


def udp_send(addr: str, n: int):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(n):
            s.sendto(b"d%d" % i, (addr, PORT))
            time.sleep(0.001)  # keep the socket buffers out of the measurement


def udp_send_dropped(addr: str, n: int) -> int:
    """Like udp_send where the sender's own output rule drops: the kernel answers
    such a send with EPERM. Returns how many sends it refused."""
    refused = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(n):
            try:
                s.sendto(b"d%d" % i, (addr, PORT))
            except PermissionError:
                refused += 1
    return refused


def udp_count(addr: str):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        s.sendto(b"count?", (addr, PORT))
        return int(s.recv(100))


def start_server(topo: netns.Topology, host: str) -> subprocess.Popen:
    proc = topo.popen(host, [sys.executable, "-c", SERVER, topo.addr(host), str(PORT)],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip() == "ready", f"server in {host} did not start: {line!r} {proc.stderr.read()}"
    return proc


@pytest.fixture
def topo():
    t = netns.Topology(["b1", "b2"])
    try:
        yield t
    finally:
        t.close()


def wait_hello(topo, frm: str, to: str, timeout: float = 10.0) -> str:
    """Hosts' links take a moment to come up; wait until `frm` reaches `to`."""
    deadline = time.monotonic() + timeout
    while True:
        got = topo.thread(frm).run(tcp_hello, topo.addr(to))
        if isinstance(got, str) or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_hosts_reach_each_other_and_root_cannot(topo):
    start_server(topo, "b2")
    assert wait_hello(topo, "b1", "b2") == f"hello from {topo.addr('b2')}"
    assert wait_hello(topo, netns.CLIENTS, "b2") == f"hello from {topo.addr('b2')}"
    # a process started inside a namespace (not only the in-process thread)
    out = topo.run("b1", [sys.executable, "-c",
                          f"import socket; s=socket.create_connection(('{topo.addr('b2')}', {PORT}), 2); "
                          f"print(s.recv(100).decode())"]).stdout
    assert out.strip() == f"hello from {topo.addr('b2')}"
    # the root namespace has only the blackhole route toward the subnet
    assert [r.split()[0] for r in netns.routes_for(topo.subnet)] == ["blackhole"]
    got = tcp_hello(topo.addr("b2"))
    assert isinstance(got, OSError), f"root namespace reached {topo.addr('b2')}: {got!r}"


def test_isolate_stops_traffic_and_heal_restores_it(topo):
    start_server(topo, "b2")
    assert wait_hello(topo, "b1", "b2").startswith("hello")

    topo.isolate("b2")
    assert "quiver_fault" in topo.faults("b2")
    for frm in ("b1", netns.CLIENTS):
        got = topo.thread(frm).run(tcp_hello, topo.addr("b2"))
        assert isinstance(got, OSError), f"{frm} reached isolated b2: {got!r}"
    # and b2 cannot reach out either
    start_server(topo, "b1")
    assert wait_hello(topo, netns.CLIENTS, "b1").startswith("hello")
    got = topo.thread("b2").run(tcp_hello, topo.addr("b1"))
    assert isinstance(got, OSError), f"isolated b2 reached b1: {got!r}"
    # loopback inside the isolated host still works (a broker talks to itself)
    out = topo.run("b2", [sys.executable, "-c",
                          f"import socket; s=socket.create_connection(('127.0.0.1', 9), 1)"], check=False)
    assert "Connection refused" in out.stderr, out.stderr  # refused = reached, nothing listens

    topo.heal("b2")
    assert topo.faults("b2") == ""
    assert wait_hello(topo, "b1", "b2") == f"hello from {topo.addr('b2')}"
    assert topo.thread("b2").run(tcp_hello, topo.addr("b1")) == f"hello from {topo.addr('b1')}"


def test_partial_isolation_cuts_only_the_named_peers(topo):
    start_server(topo, "b2")
    assert wait_hello(topo, "b1", "b2").startswith("hello")
    topo.isolate("b2", peers=["b1"])
    got = topo.thread("b1").run(tcp_hello, topo.addr("b2"))
    assert isinstance(got, OSError), f"b1 reached b2 through a b1|b2 cut: {got!r}"
    assert topo.thread(netns.CLIENTS).run(tcp_hello, topo.addr("b2")) == f"hello from {topo.addr('b2')}"
    topo.heal("b2")
    assert wait_hello(topo, "b1", "b2").startswith("hello")


def test_loss_drops_a_share_of_packets(topo):
    start_server(topo, "b2")
    assert wait_hello(topo, "b1", "b2").startswith("hello")
    t = topo.thread("b1")
    t.run(udp_send, topo.addr("b2"), 200)
    before = t.run(udp_count, topo.addr("b2"))
    assert before == 200, f"{before} of 200 datagrams arrived without loss"

    topo.loss("b2", 100)
    t.run(udp_send, topo.addr("b2"), 50)
    topo.heal("b2")
    assert t.run(udp_count, topo.addr("b2")) == 200, "datagrams arrived through 100% loss"

    # 50 %: the count is binomial(400, 0.5) -- outside [120, 280] is ~1e-17
    topo.loss("b2", 50)
    t.run(udp_send, topo.addr("b2"), 400)
    topo.heal("b2")
    got = t.run(udp_count, topo.addr("b2")) - 200
    assert 120 <= got <= 280, f"{got} of 400 datagrams arrived through 50% loss"


def test_loss_toward_peers_drops_only_what_the_host_sends_them(topo):
    # the fault matrix's lossy broker links: b1's datagrams to b2 are dropped, the
    # clients' to b2 are not, and b2's replies to b1 are untouched (one direction)
    start_server(topo, "b2")
    assert wait_hello(topo, "b1", "b2").startswith("hello")
    b1, clients = topo.thread("b1"), topo.thread(netns.CLIENTS)
    topo.loss("b1", 100, peers=["b2"])
    refused = b1.run(udp_send_dropped, topo.addr("b2"), 50)
    assert refused == 50, f"{refused} of 50 sends refused by b1's output rule"
    clients.run(udp_send, topo.addr("b2"), 30)
    assert clients.run(udp_count, topo.addr("b2")) == 30, "the clients' datagrams went through b1's loss"
    assert "numgen" not in topo.faults("b1") and "drop" in topo.faults("b1")
    topo.heal("b1")
    assert b1.run(udp_count, topo.addr("b2")) == 30, "b1's datagrams arrived through 100% loss toward b2"

    topo.loss("b2", 100, peers=["b1"])  # b2's sending side only: b1 -> b2 still arrives
    b1.run(udp_send, topo.addr("b2"), 20)
    assert clients.run(udp_count, topo.addr("b2")) == 50
    topo.heal("b2")


def test_close_leaves_nothing_behind():
    links_before = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    t = netns.Topology(["b1", "b2", "b3"])
    start_server(t, "b1")
    t.isolate("b2")
    names, subnet = t.namespaces(), t.subnet
    assert set(names) <= set(netns.netns_list())
    t.close()
    assert [ns for ns in netns.netns_list() if ns in names] == []
    assert netns.routes_for(subnet) == []
    links_after = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    # root-namespace interfaces: same names as before (we never created any there)
    strip = lambda s: sorted(line.split(":")[1].strip() for line in s.splitlines())  # noqa: E731
    assert strip(links_after) == strip(links_before)


def test_a_dead_owners_leftovers_are_cleaned_when_the_slot_is_taken_again():
    t1 = netns.Topology(["b1"])
    slot, prefix, subnet = t1.slot, t1.prefix, t1.subnet
    # an owner that died without cleaning up: its lock is gone, its namespaces are not
    t1._slot.release()
    t1._closed = True
    t2 = netns.Topology(["b1"], slot=slot)
    try:
        # (only if another run grabbed the slot in between is it someone else's now;
        # then that run cleaned t1's leftovers when it took the slot)
        if t2.slot == slot:
            assert len(netns.routes_for(subnet)) == 1, "the old blackhole route was not replaced"
            start_server(t2, "b1")
            assert wait_hello(t2, netns.CLIENTS, "b1").startswith("hello")
    finally:
        t2.close()
    if t2.slot == slot:
        assert [ns for ns in netns.netns_list() if ns.startswith(prefix)] == []
        assert netns.routes_for(subnet) == []
