"""Cgroups of the sandbox: one private cgroup per run, and the removal of stale ones.

Owns `Cgroup` (v2 when its memory controller is usable, else v1: memory cap for the whole tree,
CPU quota, cpuset; usage, peak, OOM kills, CPU time; kill everything in it), the cleanup of the
cgroups left by validators that died (`remove_stale_cgroups`) and `memory_method` (cgroup or the
rlimit+sampler fallback).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import time
import uuid
from pathlib import Path

import psutil

from mlflow_numerai.sandbox.limits import SandboxError, SandboxLimits

CGROUP_PREFIX = "mlflow_numerai-"
log = logging.getLogger(__name__)


def _own_cgroup_paths() -> dict[str, str]:
    """Controller (or '' for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    paths = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for ctl in controllers.split(",") if controllers else [""]:
            paths[ctl] = path
    return paths


class Cgroup:
    """A private cgroup for one sandbox run (v2 when its memory controller is usable, else v1)."""

    def __init__(self, dirs: dict[str, Path], version: int):
        self.dirs = dirs  # controller -> directory ("unified" for v2)
        self.version = version

    @property
    def name(self) -> str:
        return next(iter(self.dirs.values())).name if self.dirs else ""

    @classmethod
    def create(cls, limits: SandboxLimits, cpus: list[int]) -> Cgroup | None:
        """Make and configure the cgroup; None where cgroups are not writable."""
        return cls.open(limits, cpus)[0]

    @classmethod
    def open(cls, limits: SandboxLimits, cpus: list[int]) -> tuple[Cgroup | None, str | None]:
        """(the cgroup, None), or (None, why no cgroup could be made). Named for its owner
        (`mlflow_numerai-<pid>-<token>`), so a later run can remove it if this process dies."""
        name = f"{CGROUP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}"
        try:
            own = _own_cgroup_paths()
        except OSError as exc:
            return None, f"cannot read /proc/self/cgroup ({exc})"
        errors = []
        for version, creator in ((2, cls._create_v2), (1, cls._create_v1)):
            try:
                group = creator(name, own, limits, cpus)
            except OSError as exc:
                errors.append(f"cgroup v{version}: {exc}")
                continue
            if group is not None:
                return group, None
        return None, "; ".join(errors) or "no cgroup memory controller is mounted here"

    @classmethod
    def _create_v2(cls, name, own, limits, cpus):
        root = next((p for p in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"))
                     if (p / "cgroup.controllers").exists()), None)
        if root is None or "" not in own:
            return None
        parent = root / own[""].lstrip("/")
        if "memory" not in (parent / "cgroup.controllers").read_text().split():
            return None
        if "memory" not in (parent / "cgroup.subtree_control").read_text().split():
            (parent / "cgroup.subtree_control").write_text("+memory")
        path = parent / name
        path.mkdir()
        group = cls({"unified": path}, 2)
        try:
            (path / "memory.max").write_text(str(limits.memory_bytes))
            if (path / "memory.swap.max").exists():
                (path / "memory.swap.max").write_text("0")
            if (path / "cpu.max").exists():
                (path / "cpu.max").write_text(f"{limits.cpus * 100000} 100000")
            if (path / "cpuset.cpus").exists():
                (path / "cpuset.cpus").write_text(",".join(map(str, cpus)))
        except OSError:
            group.remove()
            raise
        return group

    @classmethod
    def _create_v1(cls, name, own, limits, cpus):
        base = Path("/sys/fs/cgroup")
        if "memory" not in own or not (base / "memory" / "memory.limit_in_bytes").exists():
            return None
        dirs: dict[str, Path] = {}
        try:
            for ctl in ("memory", "cpu", "cpuacct"):
                parent = base / ctl / own.get(ctl, "/").lstrip("/")
                if not parent.is_dir():
                    if ctl == "memory":
                        return None
                    continue
                try:
                    (parent / name).mkdir()
                except OSError:
                    if ctl == "memory":
                        raise
                    continue
                dirs[ctl] = parent / name
            group = cls(dirs, 1)
            mem = dirs["memory"]
            (mem / "memory.limit_in_bytes").write_text(str(limits.memory_bytes))
            if (mem / "memory.memsw.limit_in_bytes").exists():
                try:  # no swapping past the cap either
                    (mem / "memory.memsw.limit_in_bytes").write_text(str(limits.memory_bytes))
                except OSError:
                    pass
            if "cpu" in dirs:
                period = int((dirs["cpu"] / "cpu.cfs_period_us").read_text())
                (dirs["cpu"] / "cpu.cfs_quota_us").write_text(str(limits.cpus * period))
            return group
        except OSError:
            cls(dirs, 1).remove()
            raise

    def proc_files(self) -> list[Path]:
        return [d / "cgroup.procs" for d in self.dirs.values()]

    def _memdir(self) -> Path:
        return self.dirs["unified"] if self.version == 2 else self.dirs["memory"]

    def pids(self) -> list[int]:
        try:
            text = (self._memdir() / "cgroup.procs").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def usage(self) -> int:
        name = "memory.current" if self.version == 2 else "memory.usage_in_bytes"
        try:
            return int((self._memdir() / name).read_text())
        except (OSError, ValueError):
            return 0

    def peak(self) -> int:
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        try:
            return int((self._memdir() / name).read_text())
        except (OSError, ValueError):
            return 0

    def oom_kills(self) -> int:
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            text = (self._memdir() / name).read_text()
        except OSError:
            return 0
        match = re.search(r"^oom_kill (\d+)", text, flags=re.M)
        return int(match.group(1)) if match else 0

    def cpu_seconds(self) -> float | None:
        try:
            if self.version == 2:
                stat = (self.dirs["unified"] / "cpu.stat").read_text()
                return int(re.search(r"usage_usec (\d+)", stat).group(1)) / 1e6
            if "cpuacct" in self.dirs:
                return int((self.dirs["cpuacct"] / "cpuacct.usage").read_text()) / 1e9
        except (OSError, AttributeError, ValueError):
            pass
        return None

    def kill_all(self) -> int:
        """SIGKILL every process in the cgroup; the number killed."""
        killed = 0
        if self.version == 2 and (self.dirs["unified"] / "cgroup.kill").exists():
            pids = self.pids()
            try:
                (self.dirs["unified"] / "cgroup.kill").write_text("1")
                return len(pids)
            except OSError:
                pass
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        return killed

    def remove(self) -> bool:
        """Remove the cgroup directories, killing what is still in them; False (logged) if one stays."""
        return all(_remove_cgroup_dir(path) for path in self.dirs.values())


def _remove_cgroup_dir(path: Path, attempts: int = 250) -> bool:
    error: OSError | None = None
    for _ in range(attempts):
        try:
            path.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:  # busy: processes still in it (or exiting)
            error = exc
            try:
                for pid in (path / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
            time.sleep(0.02)
    log.warning("could not remove the sandbox cgroup %s: %s", path, error)
    return False


def _cgroup_parents() -> list[Path]:
    """The directories where this process makes its sandbox cgroups (v2 and every v1 controller)."""
    try:
        own = _own_cgroup_paths()
    except OSError:
        return []
    base = Path("/sys/fs/cgroup")
    parents = []
    for ctl, rel in own.items():
        if ctl == "":
            roots = [p for p in (base, base / "unified") if (p / "cgroup.controllers").exists()]
            parents += [r / rel.lstrip("/") for r in roots]
        elif ctl in ("memory", "cpu", "cpuacct"):
            parents.append(base / ctl / rel.lstrip("/"))
    return [p for p in dict.fromkeys(parents) if p.is_dir()]


_OWNED = re.compile(rf"^{re.escape(CGROUP_PREFIX)}(\d+)-[0-9a-f]+$")


def remove_stale_cgroups() -> list[str]:
    """Remove the sandbox cgroups left by validators that died (SIGKILL, OOM, power loss): those
    named for an owner pid that no longer runs. Logged; returns the paths removed."""
    removed = []
    for parent in _cgroup_parents():
        try:
            entries = list(parent.iterdir())
        except OSError:
            continue
        for path in entries:
            match = _OWNED.match(path.name)
            if not match or int(match.group(1)) == os.getpid() or psutil.pid_exists(int(match.group(1))):
                continue
            if _remove_cgroup_dir(path):
                log.warning("removed the stale sandbox cgroup %s (its validator, pid %s, is gone)",
                            path, match.group(1))
                removed.append(str(path))
    return removed


def memory_method(requested: str, group: Cgroup | None) -> str:
    """How the memory cap is enforced: 'cgroup-v2', 'cgroup-v1' or 'rlimit+sampler'."""
    if group is not None:
        return f"cgroup-v{group.version}"
    if requested == "cgroup":
        raise SandboxError("a cgroup memory limit was requested but no writable cgroup memory controller exists")
    return "rlimit+sampler"

