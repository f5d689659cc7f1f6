"""Process harness for the end-to-end tests: real `quiver serve` child
processes on reserved ports, each with its own data directory.

Ports: a test reserves a *slot* by taking an exclusive flock on
<lock dir>/slot-<n>.lock; slot n owns ports 19100+10n .. 19100+10n+9: Kafka
(TCP) at +0, admin (TCP) at +1, cluster QUIC (UDP) at +2.  The lock is held for
as long as the Broker object lives, so parallel test runs (or parallel tests)
never hand the same ports to two brokers.  A slot whose ports are nevertheless
busy (a foreign process) is skipped.

Readiness: a raw ApiVersions v0 request over TCP until the broker answers
with error 0, with a deadline; on failure the broker's stderr tail is shown.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

import kproto

PORT_BASE = int(os.environ.get("QUIVER_E2E_PORT_BASE", "19100"))
SLOT_WIDTH = 10
SLOTS = 200
LOCK_DIR = Path(os.environ.get("QUIVER_E2E_LOCK_DIR", "/tmp/quiver-e2e-ports"))
READY_TIMEOUT = float(os.environ.get("QUIVER_E2E_READY_TIMEOUT", "60"))


def quiver_bin() -> str:
    path = os.environ.get("QUIVER_BIN")
    if not path:
        target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/quiver/target"))
        path = os.path.join(target, "release", "quiver")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"quiver binary not found at {path} (set QUIVER_BIN or run tests/run)")
    return path


def _port_is_free(port: int, kind: int = socket.SOCK_STREAM) -> bool:
    s = socket.socket(socket.AF_INET, kind)
    try:
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


class PortSlot:
    """An exclusively held band of SLOT_WIDTH ports."""

    def __init__(self):
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        start = os.getpid() % SLOTS  # spread concurrent runs over the band
        for i in range(SLOTS):
            slot = (start + i) % SLOTS
            fd = os.open(LOCK_DIR / f"slot-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            base = PORT_BASE + SLOT_WIDTH * slot
            if not (all(_port_is_free(base + k) for k in range(3))
                    and _port_is_free(base + 2, socket.SOCK_DGRAM)):
                os.close(fd)
                continue
            self.slot, self.base, self._fd = slot, base, fd
            return
        raise RuntimeError(f"no free port slot under {LOCK_DIR}")

    @property
    def kafka_port(self) -> int:
        return self.base

    @property
    def admin_port(self) -> int:
        return self.base + 1

    @property
    def cluster_port(self) -> int:
        """UDP: the broker's QUIC endpoint (cluster.listen)."""
        return self.base + 2

    def release(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _die_with_parent():
    """preexec_fn: the broker gets SIGKILL if the test process dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    os.setsid()


def ask_api_versions(host: str, port: int, timeout: float = 2.0) -> Optional[kproto.ApiVersionsResult]:
    """One ApiVersions v0 round trip, or None if nothing (valid) answered."""
    try:
        with kproto.Conn(host, port, timeout=timeout) as c:
            return kproto.api_versions(c, 0)
    except (OSError, ValueError, ConnectionError):
        return None


def tail(path: Path, n: int = 40) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "<no output file>"
    return "\n".join(lines[-n:])


class BrokerFailed(AssertionError):
    pass


class Broker:
    """One `quiver serve` child process."""

    def __init__(self, workdir: Path, sets: Optional[dict] = None, env: Optional[dict] = None,
                 args: Optional[list] = None, slot: Optional[PortSlot] = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.sets = dict(sets or {})
        self.env = dict(env or {})
        self.extra_args = list(args or [])
        self.slot = slot or PortSlot()
        self.host = "127.0.0.1"
        self.port = self.slot.kafka_port
        self.proc: Optional[subprocess.Popen] = None
        self.starts = 0
        self.api_ranges: dict = {}

    # -- addresses and files
    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def admin(self) -> str:
        """host:port of the HTTP admin API."""
        return f"{self.host}:{self.slot.admin_port}"

    @property
    def stdout_path(self) -> Path:
        return self.workdir / f"stdout.{self.starts}.log"

    @property
    def stderr_path(self) -> Path:
        return self.workdir / f"stderr.{self.starts}.log"

    def command(self) -> list:
        # cluster.listen too: every broker binds its QUIC endpoint, and the default
        # (127.0.0.1:9093) would collide between brokers of parallel tests
        cmd = [quiver_bin(), "serve", "--data-dir", str(self.data_dir),
               "--kafka-listen", self.bootstrap, "--admin-listen", self.admin,
               "--set", f"cluster.listen={self.host}:{self.slot.cluster_port}"]
        for k, v in self.sets.items():
            cmd += ["--set", f"{k}={v}"]
        return cmd + self.extra_args

    def partition_dir(self, topic: str, partition: int = 0) -> Path:
        return self.data_dir / f"{topic}-{partition}"

    def segments(self, topic: str, partition: int = 0) -> list[Path]:
        return sorted(self.partition_dir(topic, partition).glob("*.log"))

    # -- lifecycle
    def spawn(self) -> subprocess.Popen:
        """Start the process without waiting for readiness."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("broker already running")
        self.starts += 1
        # the harness's own QUIVER_BIN / QUIVER_E2E_* variables are not broker
        # configuration (which is QUIVER_<SECTION>__<KEY>); keep them away from it
        env = {k: v for k, v in os.environ.items()
               if not (k == "QUIVER_BIN" or k.startswith("QUIVER_E2E_"))}
        env.setdefault("RUST_BACKTRACE", "1")
        env.update(self.env)
        out = open(self.stdout_path, "wb")
        err = open(self.stderr_path, "wb")
        try:
            self.proc = subprocess.Popen(self.command(), cwd=self.workdir, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=err, env=env, preexec_fn=_die_with_parent)
        finally:
            out.close()
            err.close()
        return self.proc

    def start(self, timeout: float = READY_TIMEOUT) -> "Broker":
        self.spawn()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                raise BrokerFailed(f"quiver serve exited with code {code} before becoming ready\n"
                                   f"command: {' '.join(self.command())}\n--- stderr tail ---\n"
                                   f"{tail(self.stderr_path)}")
            res = self.probe()
            if res is not None and res.error_code == 0:
                self.api_ranges = res.ranges
                return
            if time.monotonic() > deadline:
                raise BrokerFailed(f"broker on {self.bootstrap} not ready after {timeout}s "
                                   f"(last ApiVersions answer: {res})\n--- stderr tail ---\n"
                                   f"{tail(self.stderr_path)}")
            time.sleep(0.05)  # poll interval

    def probe(self) -> Optional[kproto.ApiVersionsResult]:
        """One readiness question (ApiVersions v0); None if nothing answered."""
        return ask_api_versions(self.host, self.port)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """SIGKILL, as a crash."""
        if self.alive():
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code (SIGKILLs after timeout)."""
        if not self.alive():
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
            raise BrokerFailed(f"broker did not exit within {timeout}s of SIGTERM\n{tail(self.stderr_path)}")

    def restart(self, timeout: float = READY_TIMEOUT) -> "Broker":
        if self.alive():
            self.stop()
        return self.start(timeout)

    def close(self):
        try:
            if self.alive():
                self.proc.kill()
                self.proc.wait(timeout=30)
        finally:
            self.slot.release()

    def stderr_text(self, all_starts: bool = True) -> str:
        starts = range(1, self.starts + 1) if all_starts else [self.starts]
        out = []
        for s in starts:
            p = self.workdir / f"stderr.{s}.log"
            if p.exists():
                out.append(p.read_text(errors="replace"))
        return "\n".join(out)

    def panics(self) -> list[str]:
        return [line for line in self.stderr_text().splitlines() if "panicked at" in line]


def wait_until(pred, timeout: float, what: str, interval: float = 0.05):
    """Poll pred() until it returns a truthy value; fail with `what`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
