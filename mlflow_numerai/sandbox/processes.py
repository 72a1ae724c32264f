"""The child's process tree: sampling it, killing all of it, and keeping its output.

Owns `TreeSampler` (RSS peak, CPU time and every pid seen in the tree; kills on a memory breach
in the rlimit fallback), `kill_everything` (the process group, the cgroup, every pid seen and every
holder of the run's token: nothing is left behind), and `LogKeeper` (the child's output with
bounded memory: its first and last bytes).
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time

import psutil

from mlflow_numerai.sandbox.cgroups import Cgroup
from mlflow_numerai.sandbox.isolation import TOKEN_ENV

LOG_TAIL_BYTES = 2_000_000
LOG_HEAD_BYTES = 256_000  # the child's log keeps its first and last bytes, whatever it prints


class TreeSampler(threading.Thread):
    """Samples the child's process tree: RSS peak, CPU time, every pid seen; kills on breach."""

    def __init__(self, root_pid: int, group: Cgroup | None, cap: int | None, interval: float, on_breach):
        super().__init__(daemon=True, name="sandbox-sampler")
        self.root_pid = root_pid
        self.group = group
        self.cap = cap  # enforce (rlimit mode) when set
        self.interval = interval
        self.on_breach = on_breach
        self.peak_rss = 0
        self.breached = False
        self.seen: dict[int, float] = {}  # pid -> create_time
        self.cpu: dict[int, float] = {}  # pid -> last seen user+system seconds
        self._halt = threading.Event()

    def tree(self) -> list[psutil.Process]:
        procs: dict[int, psutil.Process] = {}
        pids = self.group.pids() if self.group is not None else []
        for pid in pids:
            try:
                procs[pid] = psutil.Process(pid)
            except psutil.Error:
                pass
        try:
            root = psutil.Process(self.root_pid)
            procs[root.pid] = root
            for child in root.children(recursive=True):
                procs[child.pid] = child
        except psutil.Error:
            pass
        for pid, created in list(self.seen.items()):  # re-parented escapees
            if pid not in procs:
                try:
                    proc = psutil.Process(pid)
                    if proc.create_time() == created:
                        procs[pid] = proc
                        for child in proc.children(recursive=True):
                            procs[child.pid] = child
                except psutil.Error:
                    pass
        return list(procs.values())

    def sample(self) -> int:
        total = 0
        for proc in self.tree():
            try:
                with proc.oneshot():
                    if proc.pid not in self.seen:
                        self.seen[proc.pid] = proc.create_time()
                    total += proc.memory_info().rss
                    times = proc.cpu_times()
                    self.cpu[proc.pid] = times.user + times.system
            except psutil.Error:
                pass
        self.peak_rss = max(self.peak_rss, total)
        return total

    def run(self) -> None:
        while not self._halt.is_set():
            total = self.sample()
            if self.cap is not None and total > self.cap and not self.breached:
                self.breached = True
                self.on_breach()
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


def _token_holders(token: str) -> list[psutil.Process]:
    """Processes whose environment carries this run's token (descendants that escaped the tree)."""
    found = []
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            if proc.environ().get(TOKEN_ENV) == token:
                found.append(proc)
        except (psutil.Error, OSError):
            pass
    return found


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_everything(child_pid: int, sampler: TreeSampler, group: Cgroup | None, token: str,
                    settle_seconds: float = 5.0) -> int:
    """SIGKILL the child's group, cgroup, every process seen in its tree and every token holder.

    Returns how many processes other than the direct child had to be killed.
    """
    killed: set[int] = set()
    deadline = time.monotonic() + settle_seconds
    while True:
        if group is not None:
            for pid in group.pids():
                killed.add(pid)
            group.kill_all()
        try:
            os.killpg(child_pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for proc in sampler.tree() + _token_holders(token):
            if proc.pid == os.getpid():
                continue
            try:
                proc.kill()
                killed.add(proc.pid)
            except psutil.Error:
                pass
        time.sleep(0.02)
        remaining = [p for p in sampler.tree() + _token_holders(token) if p.pid != child_pid and _alive(p)]
        if group is not None:
            remaining += [pid for pid in group.pids() if pid != child_pid]
        if not remaining or time.monotonic() > deadline:
            break
    killed.discard(child_pid)
    return len(killed)


def kill_on_breach(pid: int, group: Cgroup | None, flag: threading.Event) -> None:
    """Kill the tree at once from the sampler thread (the main loop then reports `oom`)."""
    flag.set()
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if group is not None:
        group.kill_all()


class LogKeeper(threading.Thread):
    """Reads the child's output from a pipe, keeping its first LOG_HEAD_BYTES and last
    LOG_TAIL_BYTES: a model that floods its output costs the validator bounded memory and disk."""

    def __init__(self, fd: int):
        super().__init__(daemon=True, name="sandbox-log")
        self.fd = fd
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                if not select.select([self.fd], [], [], 0.2)[0]:
                    continue
                chunk = os.read(self.fd, 1 << 16)
                if not chunk:
                    break
                self.total += len(chunk)
                room = LOG_HEAD_BYTES - len(self.head)
                if room > 0:
                    self.head += chunk[:room]
                    chunk = chunk[room:]
                self.tail += chunk
                if len(self.tail) > 2 * LOG_TAIL_BYTES:
                    del self.tail[:-LOG_TAIL_BYTES]
        finally:
            os.close(self.fd)

    def finish(self, timeout: float = 10.0) -> None:
        """Wait for the end of the output (every writer is dead by now), then stop reading."""
        self.join(timeout)
        self._halt.set()
        self.join(1.0)

    def text(self) -> str:
        tail = bytes(self.tail[-LOG_TAIL_BYTES:])
        cut = self.total - len(self.head) - len(tail)
        middle = f"\n[... {cut} bytes cut ...]\n".encode() if cut > 0 else b""
        return (bytes(self.head) + middle + tail).decode("utf-8", errors="replace")


