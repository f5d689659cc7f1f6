"""A Quiver cluster for the end-to-end tests: N `quiver serve --config nodeN.toml`
child processes, each with its own data directory and ports, certificates from
`quiver cluster certs`, and helpers to ask it what a client would see and to
hurt it.

Two placements:
- loopback (default): every broker on 127.0.0.1 with ports from its own
  harness.PortSlot (Kafka TCP, admin TCP, cluster QUIC UDP), reserved by a held
  flock so parallel tests never collide;
- netns=True: every broker in its own network namespace (netns.Topology) at
  10.231.S.(10+id), on the standard ports, and every client -- the workload
  processes and this harness's own Metadata and /v1/cluster questions -- in the
  topology's clients namespace. topology.isolate(...) then cuts a broker off.

Readiness is always asked, never slept for: ApiVersions for "the process is
up", Metadata and /v1/cluster for "the cluster is formed". Brokers die with the
test process (PR_SET_PDEATHSIG) and are killed on close(), also when a test
fails (the cluster_factory fixture).

Broker ids are 1..N; broker i is `b<i>` in a topology.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterable, Optional

import kproto
from harness import Broker, PortSlot, ask_api_versions, quiver_bin, tail, wait_until

# Timing of the test clusters: quick failure detection so faults resolve in seconds.
FAST_TIMING = {
    "heartbeat_interval_ms": 250,
    "session_timeout_ms": 1500,
    "replica_lag_time_max_ms": 3000,
    "election_timeout_ms": 300,
}
FORM_TIMEOUT = float(os.environ.get("QUIVER_E2E_FORM_TIMEOUT", "60"))


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML form for {v!r}")


def toml_document(sections: dict) -> str:
    out = []
    for name, keys in sections.items():
        out.append(f"[{name}]")
        out += [f"{k} = {toml_value(v)}" for k, v in keys.items() if v is not None]
        out.append("")
    return "\n".join(out)


class _NetnsPorts:
    """Stands in for a PortSlot when the broker has a namespace (and so an
    address) of its own: the standard ports, nothing to reserve."""
    kafka_port, admin_port, cluster_port = 9092, 9644, 9093

    def release(self):
        pass


def all_threads_stopped(pid: int) -> bool:
    """Whether every thread of `pid` is in the stopped state ('T' in /proc)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        states = []
        for tid in tasks:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                states.append(f.read().rsplit(")", 1)[1].split()[0])
    except FileNotFoundError:
        return False
    return bool(states) and all(s in ("T", "t") for s in states)


class ClusterBroker(Broker):
    """One broker of a Cluster: harness.Broker started from a config file,
    optionally inside a namespace, asked for readiness from the clients' side."""

    def __init__(self, cluster: "Cluster", node_id: int, workdir: Path, host: str, slot,
                 prefix: list[str], sets: Optional[dict] = None):
        super().__init__(workdir, sets=sets, slot=slot)
        self.cluster = cluster
        self.node_id = node_id
        self.host = host
        self.port = slot.kafka_port
        self.prefix = prefix  # e.g. ["ip", "netns", "exec", ns]
        self.config_path = self.workdir / f"node{node_id}.toml"
        self.paused = False
        # put between the namespace prefix and the binary on the next start, e.g.
        # ["env", "LD_PRELOAD=...libfaketimeMT.so.1", "FAKETIME=-5m"] for a skewed clock
        self.wrapper: list[str] = []

    @property
    def cluster_addr(self) -> str:
        return f"{self.host}:{self.slot.cluster_port}"

    def command(self) -> list:
        cmd = self.prefix + self.wrapper + [quiver_bin(), "serve", "--config", str(self.config_path)]
        for k, v in self.sets.items():
            cmd += ["--set", f"{k}={v}"]
        return cmd + self.extra_args

    def probe(self):
        return self.cluster.call(ask_api_versions, self.host, self.port)

    def pause(self):
        """SIGSTOP: the process stays, frozen (timeouts run out around it). Returns once
        every thread is stopped: the signal is delivered asynchronously, and a thread
        still running could answer one more request."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True
        wait_until(lambda: all_threads_stopped(self.proc.pid), 10, f"broker {self.node_id} to stop")

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def kill(self):
        super().kill()  # SIGKILL reaches a stopped process too
        self.paused = False


class Cluster:
    """N brokers forming one cluster. See the module doc.

    racks: {id: rack} (optional); cluster: extra [cluster] keys (override
    FAST_TIMING); extra: more sections, {"log": {...}, ...}; sets: --set
    overrides for every broker."""

    def __init__(self, workdir: Path, n: int = 3, netns: bool = False, cluster_id: str = "test-cluster",
                 racks: Optional[dict] = None, cluster: Optional[dict] = None,
                 extra: Optional[dict] = None, sets: Optional[dict] = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ids = list(range(1, n + 1))
        self.cluster_id = cluster_id
        self.racks = dict(racks or {})
        self.cluster_settings = {**FAST_TIMING, **(cluster or {})}
        self.extra = dict(extra or {})
        self.topology = None
        self.brokers: dict[int, ClusterBroker] = {}
        self._admin = None
        try:
            if netns:
                import netns as _netns
                self.topology = _netns.Topology([f"b{i}" for i in self.ids])
                self._thread = self.topology.thread(_netns.CLIENTS)
            for i in self.ids:
                if self.topology is not None:
                    host, slot = self.topology.addr(f"b{i}"), _NetnsPorts()
                    prefix = self.topology.exec_prefix(f"b{i}")
                else:
                    host, slot, prefix = "127.0.0.1", PortSlot(), []
                self.brokers[i] = ClusterBroker(self, i, self.workdir / f"broker-{i}", host, slot, prefix,
                                                sets=sets)
            self.certs_dir = self.workdir / "certs"
            if n > 1:
                self._make_certs()
            for b in self.brokers.values():
                b.config_path.write_text(toml_document(self.config_for(b.node_id)))
        except BaseException:
            self.close()
            raise

    # -- setup
    def _make_certs(self):
        hosts = ["127.0.0.1", "localhost"] + sorted({b.host for b in self.brokers.values()} - {"127.0.0.1"})
        cmd = [quiver_bin(), "cluster", "certs", "--cluster-id", self.cluster_id,
               "--brokers", ",".join(map(str, self.ids)), "--out", str(self.certs_dir),
               "--hosts", ",".join(hosts)]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
        if proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr}")
        missing = [f for f in ["ca.pem"] + [f"broker-{i}.{e}" for i in self.ids for e in ("pem", "key")]
                   if not (self.certs_dir / f).exists()]
        if missing:
            raise AssertionError(f"quiver cluster certs did not write {missing} into {self.certs_dir}")

    def config_for(self, node_id: int) -> dict:
        b = self.brokers[node_id]
        cluster = {"id": self.cluster_id, "listen": b.cluster_addr}
        if len(self.ids) > 1:
            cluster["seeds"] = [f"{i}@{self.brokers[i].cluster_addr}" for i in self.ids]
            cluster["tls_dir"] = str(self.certs_dir)
        cluster.update(self.cluster_settings)
        doc = {
            "broker": {"node_id": node_id, "data_dir": str(b.data_dir), "rack": self.racks.get(node_id)},
            # topics exist only when a test creates them (a Metadata question
            # about a missing topic must not create it)
            "kafka": {"listen": b.bootstrap, "auto_create_topics": False},
            "admin": {"listen": b.admin},
            "cluster": cluster,
        }
        for section, keys in self.extra.items():
            doc.setdefault(section, {}).update(keys)
        return doc

    # -- running code on the clients' side
    def call(self, fn: Callable, *args, **kwargs):
        """Run fn where clients run: here on loopback, on the clients-namespace
        thread in a namespaced cluster (anything it connects stays there)."""
        if self.topology is None:
            return fn(*args, **kwargs)
        return self._thread.run(fn, *args, **kwargs)

    def client_popen(self, cmd: list, **kwargs) -> subprocess.Popen:
        """Start a client process (launcher for cluster_workload.Workload)."""
        if self.topology is None:
            return subprocess.Popen(cmd, **kwargs)
        import netns as _netns
        return self.topology.popen(_netns.CLIENTS, cmd, **kwargs)

    def workload(self, topic: str, partitions: int, dir: Path, **kwargs):
        from cluster_workload import Workload
        return Workload(self.bootstrap, topic, partitions, dir, launcher=self.client_popen, **kwargs)

    @property
    def bootstrap(self) -> str:
        return ",".join(self.brokers[i].bootstrap for i in self.ids)

    def admin(self):
        """A confluent-kafka AdminClient on the clients' side (made once)."""
        if self._admin is None:
            from confluent_kafka.admin import AdminClient
            self._admin = self.call(AdminClient, {"bootstrap.servers": self.bootstrap,
                                                  "socket.timeout.ms": 10000})
        return self._admin

    # -- lifecycle
    def start(self, timeout: float = FORM_TIMEOUT, only: Optional[Iterable[int]] = None) -> "Cluster":
        """Start every broker (or only those in `only`; the others can join later
        with start_broker) and wait until they have formed the cluster."""
        started = [self.brokers[i] for i in (self.ids if only is None else only)]
        # all processes first: a broker may wait for its peers before it answers
        for b in started:
            b.spawn()
        for b in started:
            b.wait_ready(timeout)
        if len(self.ids) > 1:
            self.wait_formed(timeout)
        return self

    def broker(self, node_id: int) -> ClusterBroker:
        return self.brokers[node_id]

    def live_ids(self) -> list[int]:
        """Brokers whose process runs and is not paused."""
        return [i for i, b in self.brokers.items() if b.alive() and not b.paused]

    def kill(self, node_id: int):
        """kill -9."""
        self.brokers[node_id].kill()

    def stop(self, node_id: int, timeout: float = 30.0) -> int:
        """SIGTERM (a controlled shutdown); returns the exit code."""
        b = self.brokers[node_id]
        if b.paused:  # a stopped process would only see the SIGTERM after a SIGCONT
            b.resume()
        return b.stop(timeout)

    def pause(self, node_id: int):
        self.brokers[node_id].pause()

    def resume(self, node_id: int):
        self.brokers[node_id].resume()

    def start_broker(self, node_id: int, timeout: float = FORM_TIMEOUT):
        b = self.brokers[node_id]
        b.spawn()
        b.wait_ready(timeout)

    def restart(self, node_id: int, timeout: float = FORM_TIMEOUT):
        """kill -9 (if running) and start again with the same data."""
        b = self.brokers[node_id]
        if b.alive():
            b.kill()
        self.start_broker(node_id, timeout)

    def close(self):
        errors = []
        for b in self.brokers.values():
            try:
                b.close()
            except Exception as e:  # keep killing the others
                errors.append(f"broker {b.node_id}: {e!r}")
        if self.topology is not None:
            try:
                self.topology.close()
            except Exception as e:
                errors.append(f"topology: {e!r}")
        if errors:
            raise AssertionError("cluster teardown: " + "; ".join(errors))

    # -- what the cluster says
    def status(self, via: Optional[int] = None, timeout: float = 2.0) -> dict:
        """GET /v1/cluster from broker `via` (default: the first live one that answers)."""
        last = None
        for i in ([via] if via is not None else self.live_ids()):
            url = f"http://{self.brokers[i].admin}/v1/cluster"
            try:
                return self.call(_http_json, url, timeout)
            except (OSError, ValueError, http.client.HTTPException) as e:
                last = e
        raise AssertionError(f"no /v1/cluster answer (last error: {last!r})")

    def metadata(self, via: Optional[int] = None, topics: Optional[list] = None) -> kproto.Metadata:
        """Metadata v1 as broker `via` (default: the first live one that answers) sees it.
        Name topics only if they exist: v1 has no way to say "do not auto-create"."""
        last = None
        for i in ([via] if via is not None else self.live_ids()):
            b = self.brokers[i]
            try:
                return self.call(_metadata, b.host, b.port, topics)
            except (OSError, ValueError, ConnectionError) as e:
                last = e
        raise AssertionError(f"no Metadata answer (last error: {last!r})")

    def partition(self, topic: str, p: int, via: Optional[int] = None) -> Optional[kproto.PartitionMeta]:
        # all topics, never a named one: Metadata v1 for a missing topic may auto-create it
        err, parts = self.metadata(via).topics.get(topic, (3, {}))
        return parts.get(p) if err == 0 else None

    def leader_of(self, topic: str, p: int, via: Optional[int] = None) -> Optional[int]:
        """The partition's leader, or None when Metadata names none (-1)."""
        pm = self.partition(topic, p, via)
        return pm.leader if pm is not None and pm.leader >= 0 else None

    def isr_of(self, topic: str, p: int, via: Optional[int] = None) -> list[int]:
        pm = self.partition(topic, p, via)
        return sorted(pm.isr) if pm is not None else []

    def replicas_of(self, topic: str, p: int, via: Optional[int] = None) -> list[int]:
        pm = self.partition(topic, p, via)
        return list(pm.replicas) if pm is not None else []

    def controller(self, via: Optional[int] = None) -> Optional[int]:
        return self.status(via).get("controller")

    # -- waiting for the cluster
    def wait(self, pred: Callable, timeout: float, what: str, interval: float = 0.1):
        """Poll pred() (errors count as "not yet") until it returns a truthy value."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                last = pred()
                if last:
                    return last
            except AssertionError as e:
                last = e
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})\n"
                                     + self.describe())
            time.sleep(interval)

    def wait_formed(self, timeout: float = FORM_TIMEOUT) -> int:
        """Every live broker lists exactly the live brokers in Metadata and names
        the same controller in /v1/cluster, with no live broker fenced. Returns
        the controller."""
        def formed():
            live = set(self.live_ids())
            controllers = set()
            for i in live:
                md = self.metadata(via=i)
                if set(md.brokers) != live:
                    return None
                st = self.status(via=i)
                if st.get("controller") not in live:
                    return None
                if any(b["fenced"] for b in st.get("brokers", []) if b["id"] in live):
                    return None
                controllers.add(st["controller"])
            return controllers.pop() if len(controllers) == 1 else None
        return self.wait(formed, timeout, f"the cluster to form over brokers {self.live_ids()}")

    def wait_controller(self, exclude: Iterable[int] = (), timeout: float = 30) -> int:
        """A controller that is live and not in `exclude`, agreed by every live broker."""
        exclude = set(exclude)

        def elected():
            seen = {self.status(via=i).get("controller") for i in self.live_ids()}
            c = seen.pop() if len(seen) == 1 else None
            return c if c in self.live_ids() and c not in exclude else None
        return self.wait(elected, timeout, f"a controller other than {sorted(exclude)}")

    def wait_leader(self, topic: str, p: int, exclude: Iterable[int] = (), timeout: float = 30,
                    via: Optional[int] = None) -> int:
        """A live leader of topic/p that is not in `exclude`."""
        exclude = set(exclude)

        def elected():
            leader = self.leader_of(topic, p, via)
            return leader if leader in self.live_ids() and leader not in exclude else None
        return self.wait(elected, timeout, f"a leader of {topic}/{p} other than {sorted(exclude)}")

    def wait_isr(self, topic: str, p: int, pred: Callable[[list], bool], timeout: float, what: str,
                 via: Optional[int] = None) -> list[int]:
        def ok():
            isr = self.isr_of(topic, p, via)
            return isr if pred(isr) else None
        return self.wait(ok, timeout, f"the ISR of {topic}/{p} to be {what}")

    def wait_topic(self, topic: str, partitions: int, rf: int, timeout: float = 30, full_isr: bool = True):
        """Every live broker shows the topic with all its partitions led by a live
        broker, rf replicas each, and (full_isr) every replica in sync."""
        def ready():
            live = set(self.live_ids())
            for i in live:
                err, parts = self.metadata(via=i).topics.get(topic, (3, {}))
                if err != 0 or sorted(parts) != list(range(partitions)):
                    return None
                for pm in parts.values():
                    if pm.leader not in live or len(pm.replicas) != rf:
                        return None
                    if full_isr and sorted(pm.isr) != sorted(pm.replicas):
                        return None
            return True
        self.wait(ready, timeout, f"topic {topic} ({partitions} partitions, RF {rf}) on every broker")

    def create_topic(self, name: str, partitions: int, rf: int = 3, config: Optional[dict] = None,
                     timeout: float = 30):
        """CreateTopics through the AdminClient (min.insync.replicas=2 unless
        config says otherwise), then wait until every broker shows it ready."""
        from confluent_kafka.admin import NewTopic
        cfg = {"min.insync.replicas": "2", **(config or {})}
        futs = self.admin().create_topics([NewTopic(name, num_partitions=partitions, replication_factor=rf,
                                                    config=cfg)], operation_timeout=timeout)
        futs[name].result(timeout=timeout)
        self.wait_topic(name, partitions, rf, timeout)

    # -- diagnostics
    def describe(self) -> str:
        """One line per broker: process state, and its view of the cluster."""
        lines = []
        for i, b in self.brokers.items():
            state = "paused" if b.paused else ("alive" if b.alive() else "down")
            view = ""
            if b.alive() and not b.paused:
                try:
                    st = self.status(via=i, timeout=1.0)
                    view = (f"controller={st.get('controller')} term={st.get('raft', {}).get('term')} "
                            f"fenced={[x['id'] for x in st.get('brokers', []) if x.get('fenced')]} "
                            f"urp={len(st.get('under_replicated', []))} offline={len(st.get('offline', []))}")
                except AssertionError as e:
                    view = f"no status ({e})"
            lines.append(f"  broker {i} ({b.bootstrap}) {state} {view}")
        return "cluster:\n" + "\n".join(lines)

    def log_tails(self, n: int = 60) -> str:
        return "\n".join(f"--- broker {i} ({b.workdir}) stderr tail ---\n{tail(b.stderr_path, n)}"
                         for i, b in self.brokers.items())

    def panics(self) -> list[str]:
        return [f"broker {i}: {line}" for i, b in self.brokers.items() for line in b.panics()]


def _http_json(url: str, timeout: float) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as e:
        raise ValueError(f"GET {url}: HTTP {e.code} {e.read()[:200]!r}") from None


def _metadata(host: str, port: int, topics: Optional[list]) -> kproto.Metadata:
    with kproto.Conn(host, port, timeout=5) as c:
        return kproto.metadata_v1_full(c, topics)
