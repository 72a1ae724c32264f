"""Run a predict.pkl in a child process under Numerai's limits.

The child is a fresh isolated interpreter (`python -I`) running `child.py`, in which `mlflow`,
`mlflow_numerai` and `pyro` cannot be imported. Limits, each enforced from outside the model:

- isolation (`isolation` in the outcome): under bubblewrap (`bwrap`) where it runs, with new PID,
  IPC, UTS, network, mount and cgroup namespaces, a read-only view of only the interpreter, its
  site paths and system libraries, and a private writable directory as HOME/TMPDIR/cwd holding
  the pickle and the inputs; no view of the invoking user's home, other processes or the tracking
  store. Elsewhere the fallback below (`namespaces` or `guard`), with a warning;
- network: a new network namespace (`unshare --net`) where the system allows it, otherwise an
  audit-hook guard at socket level inside the child;
- CPU: affinity to `cpus` cores, thread-count variables, and a CFS quota where cgroups are writable;
- memory for the whole process tree: a cgroup (v2 or v1) where writable, otherwise RLIMIT_AS per
  process plus a sampler of the tree's RSS that kills everything on breach;
- wall clock: the whole process group (and every process seen in the tree, in the cgroup, or
  carrying the run's token) is SIGKILLed at the limit; nothing is left behind in any outcome;
- environment: a whitelist (no MLFLOW_*, NUMERAI_*, tokens); HOME/TMPDIR/cwd a private temporary
  directory removed afterwards.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import pandas as pd
import psutil

CHILD_SCRIPT = Path(__file__).with_name("child.py")
BLOCKED_MODULES = ("mlflow", "mlflow_numerai", "pyro")
GIB = 1024**3
TOKEN_ENV = "SANDBOX_RUN_TOKEN"
THREAD_ENV = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS", "BLIS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
    "TORCH_NUM_THREADS", "POLARS_MAX_THREADS", "RAYON_NUM_THREADS",
)
PASS_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")
LOG_TAIL_BYTES = 2_000_000
LOG_HEAD_BYTES = 256_000  # the child's log keeps its first and last bytes, whatever it prints
MAX_OUTPUT_BYTES = 2 * GIB  # a predictions.csv larger than this is not copied out
BWRAP_ENV = "MLFLOW_NUMERAI_BWRAP"  # path of bwrap; a missing path forces the fallback (tests)
CGROUP_PREFIX = "mlflow_numerai-"
INSTALL_HINT = "install it with `apt-get install bubblewrap` (Debian/Ubuntu)"
log = logging.getLogger(__name__)


class SandboxError(RuntimeError):
    """The sandbox itself could not run (not the model's fault)."""


def parse_memory(text: str | int) -> int:
    """Bytes from '4GiB', '512MiB', '4G', '4096M' or a plain number of bytes."""
    if isinstance(text, int):
        if text <= 0:
            raise ValueError(f"memory must be positive, got {text}")
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)\s*", str(text), flags=re.I)
    if not match:
        raise ValueError(f"memory must look like '4GiB', '512MiB' or a number of bytes, got {text!r}")
    number, unit = float(match.group(1)), match.group(2).upper()
    value = int(number * 1024 ** "BKMGT".index(unit or "B"))
    if value <= 0:
        raise ValueError(f"memory must be positive, got {text!r}")
    return value


@dataclass(frozen=True)
class SandboxLimits:
    """Numerai's limits by default: 1 CPU, 4 GiB for the process tree, 600 s, no network."""

    cpus: int = 1
    memory_bytes: int = 4 * GIB
    timeout_seconds: float = 600.0
    network: str = "auto"  # auto | namespace | guard
    memory_enforcement: str = "auto"  # auto | cgroup | rlimit
    sample_interval: float = 0.02
    isolation: str = "auto"  # auto (bwrap, else fallback) | strict (bwrap or refuse) | fallback

    def __post_init__(self):
        if not isinstance(self.cpus, int) or self.cpus < 1:
            raise ValueError(f"cpus must be an integer >= 1, got {self.cpus!r}")
        if self.cpus > len(os.sched_getaffinity(0)):
            raise ValueError(f"cpus={self.cpus} but only {len(os.sched_getaffinity(0))} CPU(s) are available")
        if not self.memory_bytes or self.memory_bytes < 64 * 1024**2:
            raise ValueError(f"memory must be at least 64MiB, got {self.memory_bytes} bytes")
        if not self.timeout_seconds or self.timeout_seconds <= 0:
            raise ValueError(f"timeout must be positive seconds, got {self.timeout_seconds!r}")
        if self.network not in ("auto", "namespace", "guard"):
            raise ValueError(f"network must be auto, namespace or guard, got {self.network!r}")
        if self.memory_enforcement not in ("auto", "cgroup", "rlimit"):
            raise ValueError(f"memory_enforcement must be auto, cgroup or rlimit, got {self.memory_enforcement!r}")
        if self.isolation not in ("auto", "strict", "fallback"):
            raise ValueError(f"isolation must be auto, strict or fallback, got {self.isolation!r}")


@dataclass
class SandboxOutcome:
    """What happened in one child run. `status` is ok | failed (the model) | error (the sandbox)."""

    status: str
    reason: str | None
    message: str
    stage: str
    predictions_csv: str | None  # a copy outside the private directory, or None
    log: str
    exit_code: int | None
    wall_seconds: float
    cpu_seconds: float
    peak_memory_bytes: int
    peak_rss_bytes: int
    network_isolation: str
    memory_enforcement: str
    network_attempts: list[str] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)
    stragglers_killed: int = 0
    traceback: str | None = None
    isolation: str = "guard"  # bwrap | namespaces | guard
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("log")
        return data


# ----------------------------------------------------------------------------- network
@lru_cache(maxsize=1)
def namespace_available() -> bool:
    """Whether `unshare --net` can make a new network namespace here (root or user namespaces)."""
    exe = shutil.which("unshare")
    if not exe:
        return False
    try:
        return subprocess.run([exe, "--net", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def network_method(requested: str) -> str:
    """'namespace' or 'guard' for a requested mode ('auto' picks the namespace when possible)."""
    if requested == "guard":
        return "guard"
    if namespace_available():
        return "namespace"
    if requested == "namespace":
        raise SandboxError("a network namespace was requested but `unshare --net` does not work here")
    return "guard"


# ----------------------------------------------------------------------------- isolation
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What a Python child needs of /etc and /sys besides its own files (no secrets: not /etc/shadow).
SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/localtime",
                "/etc/passwd", "/etc/group", "/sys/devices/system/cpu")


@lru_cache(maxsize=4)
def _bwrap_probe(exe: str) -> str | None:
    """None when `exe` can make the sandbox's namespaces here, else why not."""
    try:
        res = subprocess.run([exe, "--unshare-all", "--die-with-parent", "--new-session", "--ro-bind", "/", "/",
                              "true"], capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{exe} could not run ({exc})"
    if res.returncode != 0:
        err = res.stderr.decode("utf-8", errors="replace").strip()[:300]
        return f"{exe} cannot create namespaces here ({err}); user namespaces may be disabled"
    return None


def bwrap_status() -> tuple[str | None, str | None]:
    """(path of a working bwrap, None), or (None, why bubblewrap cannot be used here)."""
    configured = os.environ.get(BWRAP_ENV)
    exe = shutil.which(configured or "bwrap")
    if exe is None:
        where = f"at {configured!r} ({BWRAP_ENV})" if configured else "on PATH"
        return None, f"bubblewrap (`bwrap`) is not installed {where}"
    why = _bwrap_probe(exe)
    return (None, why) if why else (exe, None)


def isolation_method(limits: SandboxLimits) -> tuple[str, str | None, list[str]]:
    """(mode, bwrap path or None, warnings): 'bwrap', else the fallback 'namespaces' or 'guard'.

    Raises SandboxError when `limits.isolation` is 'strict' and bubblewrap cannot run."""
    exe, why = (None, "the fallback was requested (isolation='fallback')")
    if limits.isolation != "fallback":
        exe, why = bwrap_status()
    if exe is not None:
        return "bwrap", exe, []
    if limits.isolation == "strict":
        raise SandboxError(f"strict isolation needs bubblewrap: {why}; {INSTALL_HINT}")
    mode = "namespaces" if network_method(limits.network) == "namespace" else "guard"
    warning = (f"partial isolation ({mode}): {why}; the model sees this machine's files and processes. "
               f"For full isolation {INSTALL_HINT}")
    return mode, None, [warning]


@lru_cache(maxsize=8)
def interpreter_paths(interpreter: str, no_site: bool) -> tuple[str, tuple[str, ...]]:
    """(executable, paths it reads: prefixes, import path) of `interpreter`, asked under the flags
    the child runs with (so the validator's own path and working directory are not included)."""
    code = ("import json, os, sys; print(json.dumps([sys.executable, [sys.prefix, sys.base_prefix, sys.exec_prefix, "
            "sys.base_exec_prefix, os.path.dirname(os.path.realpath(sys.executable)), *sys.path]]))")
    flags = ["-I", "-S"] if no_site else ["-I"]
    try:
        res = subprocess.run([interpreter, *flags, "-c", code], capture_output=True, text=True, timeout=120)
        executable, paths = json.loads(res.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        raise SandboxError(f"could not ask the interpreter {interpreter!r} for its paths: {exc!r}") from exc
    paths.append(executable)
    venv = os.path.dirname(os.path.dirname(executable))
    if os.path.isfile(os.path.join(venv, "pyvenv.cfg")):  # a virtualenv: its root, whatever the flags
        paths.append(venv)
    return executable, tuple(p for p in paths if p and os.path.isabs(p))


def _outermost(paths) -> list[str]:
    """The existing paths, without those inside another one of them (and never '/')."""
    out: list[str] = []
    for path in sorted({os.path.abspath(p) for p in paths if p and os.path.exists(p)}):
        if path != "/" and not any(path.startswith(q.rstrip("/") + "/") for q in out):
            out.append(path)
    return out


def bwrap_command(exe: str, private: Path, read_only: list[str]) -> list[str]:
    """The bwrap prefix: new namespaces, a read-only view of `read_only` and the system libraries,
    `private` as the only writable directory (besides an empty /tmp)."""
    cmd = [exe, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
           "--hostname", "sandbox", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            cmd += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            cmd += ["--ro-bind", path, path]
    for path in SYSTEM_FILES:
        cmd += ["--ro-bind-try", path, path]
    for path in _outermost(read_only):
        cmd += ["--ro-bind", path, path]
    return cmd + ["--bind", str(private), str(private), "--chdir", str(private), "--"]


# ----------------------------------------------------------------------------- cgroups
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


PRIVATE_PREFIX = "numerai-sandbox-"  # + "<owner pid>-<random>": the child's HOME, pickle and inputs
_PRIVATE = re.compile(rf"^{re.escape(PRIVATE_PREFIX)}(\d+)-[A-Za-z0-9_]+$")


def remove_stale_private_dirs() -> list[str]:
    """Remove the private directories (a copy of a pickle and its inputs) of validators that
    died before cleaning up; logged. Only names of this form whose owner pid no longer runs."""
    removed = []
    root = Path(tempfile.gettempdir())
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for path in entries:
        match = _PRIVATE.match(path.name)
        if not match or int(match.group(1)) == os.getpid() or psutil.pid_exists(int(match.group(1))):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            log.warning("removed the stale sandbox directory %s (its validator, pid %s, is gone)", path, match.group(1))
            removed.append(str(path))
    return removed


def memory_method(requested: str, group: Cgroup | None) -> str:
    """How the memory cap is enforced: 'cgroup-v2', 'cgroup-v1' or 'rlimit+sampler'."""
    if group is not None:
        return f"cgroup-v{group.version}"
    if requested == "cgroup":
        raise SandboxError("a cgroup memory limit was requested but no writable cgroup memory controller exists")
    return "rlimit+sampler"


# ----------------------------------------------------------------------------- process tree
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


# ----------------------------------------------------------------------------- environment
def child_environment(private: Path, cpus: int, token: str) -> dict[str, str]:
    """The child's whole environment: a whitelist, private HOME/TMPDIR, one-thread settings."""
    env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.setdefault("LANG", "C.UTF-8")
    env.update(HOME=str(private), TMPDIR=str(private), MPLCONFIGDIR=str(private / ".matplotlib"),
               MPLBACKEND="Agg", TF_CPP_MIN_LOG_LEVEL="2", PYTHONDONTWRITEBYTECODE="1")
    env.update({name: str(cpus) for name in THREAD_ENV})
    env[TOKEN_ENV] = token
    return env


def choose_cpus(n: int) -> list[int]:
    """The CPUs the child may use: the first `n` of the ones this process may use."""
    return sorted(os.sched_getaffinity(0))[:n]


def _write_frame(frame: pd.DataFrame | str | os.PathLike, dst: Path) -> str:
    """Put an input frame into the private directory as a pandas pickle (the child then needs
    only pandas to read it, not pyarrow: a faster start)."""
    if not isinstance(frame, pd.DataFrame):
        frame = pd.read_parquet(frame)
        if "id" in frame.columns:
            frame = frame.set_index("id")
    frame.to_pickle(dst, protocol=5)
    return str(dst)


# ----------------------------------------------------------------------------- the run
def run_pickle(
    pickle_path: str | os.PathLike,
    live: pd.DataFrame | str | os.PathLike,
    *,
    benchmarks: pd.DataFrame | str | os.PathLike | None = None,
    limits: SandboxLimits | None = None,
    profile: str = "numerai",
    interpreter: str | None = None,
    output_dir: str | os.PathLike | None = None,
) -> SandboxOutcome:
    """Run `pickle_path` on `live` in a sandboxed child and return what happened.

    `output_dir` (default: a new temporary directory) receives `predictions.csv` and `child.log`;
    the child's private working directory is removed before this returns.
    """
    limits = limits or SandboxLimits()
    if profile not in ("numerai", "forecast"):
        raise ValueError(f"profile must be 'numerai' or 'forecast', got {profile!r}")
    if not Path(pickle_path).is_file():
        raise FileNotFoundError(f"predict.pkl {str(pickle_path)!r} does not exist")
    mode, bwrap_exe, warnings = isolation_method(limits)
    interpreter = interpreter or sys.executable
    no_site = bool(site_paths(interpreter))
    bwrap = None
    if bwrap_exe is not None:
        executable, paths = interpreter_paths(interpreter, no_site)
        interpreter = executable
        read_only = [*paths, *(site_paths(interpreter) or [])]
    out_dir = Path(output_dir or tempfile.mkdtemp(prefix="numerai-sandbox-out-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    # Under bwrap the child always has its own network namespace; 'guard' adds the socket guard.
    net = ("guard" if limits.network == "guard" else "namespace") if bwrap_exe else network_method(limits.network)
    cpus = choose_cpus(limits.cpus)
    token = uuid.uuid4().hex
    remove_stale_private_dirs()
    private = Path(tempfile.mkdtemp(prefix=f"{PRIVATE_PREFIX}{os.getpid()}-"))
    os.chmod(private, 0o700)
    if bwrap_exe is not None:
        bwrap = bwrap_command(bwrap_exe, private, read_only)
    group, why = None, None
    if limits.memory_enforcement != "rlimit":
        remove_stale_cgroups()
        group, why = Cgroup.open(limits, cpus)
        if group is None and limits.memory_enforcement == "auto":
            warnings.append(f"memory cap by rlimit+sampler, not a cgroup: {why}")
    outcome = None
    try:
        if group is None and limits.memory_enforcement == "cgroup":
            raise SandboxError(f"a cgroup memory limit was requested but no cgroup could be made: {why}")
        mem_method = memory_method(limits.memory_enforcement, group)
        spec = {
            "pickle": str(shutil.copyfile(pickle_path, private / "predict.pkl")),
            "live": _write_frame(live, private / "live.pkl"),
            "benchmarks": _write_frame(benchmarks, private / "benchmarks.pkl") if benchmarks is not None else None,
            "output": str(private / "predictions.csv"),
            "result": str(private / "result.json"),
            "profile": profile,
            "blocked": list(BLOCKED_MODULES),
            "net_guard": net == "guard",
            "cpus": cpus,
            "rlimit_as": limits.memory_bytes if group is None else None,
            "site_paths": site_paths(interpreter),
            "own_pid_namespace": bwrap is not None,
        }
        (private / "spec.json").write_text(json.dumps(spec))
        script = private / "child.py"
        shutil.copyfile(CHILD_SCRIPT, script)
        outcome = _execute(spec, script, private, out_dir, limits, group, net, mem_method, token, interpreter, bwrap)
        outcome.isolation = mode
        outcome.warnings = warnings + outcome.warnings
        return outcome
    finally:
        if group is not None and not group.remove() and outcome is not None:
            outcome.warnings.append(f"the sandbox cgroup {group.name} could not be removed (see the log)")
        shutil.rmtree(private, ignore_errors=True)


def site_paths(interpreter: str) -> list[str] | None:
    """The site-packages directories to put on the child's path when it starts without `site`
    (`-S`: no .pth files run, e.g. no editable-install finders; faster). None for another
    interpreter, which then keeps its own `site` processing. A virtual environment is told by its
    directory (pyvenv.cfg), not by the real file: its python links to the same base interpreter."""
    if os.path.dirname(os.path.abspath(interpreter)) != os.path.dirname(os.path.abspath(sys.executable)):
        return None
    import site

    return [p for p in site.getsitepackages() if os.path.isdir(p)]


def _launch_command(script: Path, private: Path, group: Cgroup | None, net: str, interpreter: str,
                    no_site: bool, bwrap: list[str] | None = None) -> list[str]:
    flags = ["-I", "-S"] if no_site else ["-I"]
    cmd = [interpreter, *flags, "-X", "utf8", str(script), str(private / "spec.json")]
    if bwrap is not None:
        cmd = bwrap + cmd
    elif net == "namespace":
        cmd = [shutil.which("unshare"), "--net", "--"] + cmd
    # Join the cgroup before exec, so nothing of the model ever runs outside it.
    joins = "".join(f'echo $$ > "{p}" && ' for p in (group.proc_files() if group is not None else []))
    # Without bwrap the model's parent is this shell, not the validator: killing its parent
    # (getppid) kills a disposable shell. Under bwrap its parent is the namespace's init.
    run = 'exec "$@"' if bwrap is not None else '"$@"; exit $?'
    return ["/bin/sh", "-c", joins + run, "sandbox"] + cmd


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
        import select

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


def _open_regular(path: Path, limit: int):
    """`path` opened for reading if it is a regular file with one link, no larger than `limit`;
    else None. The child controls its directory: a symlink or hard link there could point at a
    file it was never given (the parent, not the child, would read it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or info.st_size > limit:
        os.close(fd)
        return None
    return os.fdopen(fd, "rb")


def _execute(spec, script, private, out_dir, limits, group, net, mem_method, token, interpreter,
             bwrap=None) -> SandboxOutcome:
    log_path = out_dir / "child.log"
    env = child_environment(private, limits.cpus, token)
    breach = threading.Event()
    start = time.monotonic()
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.Popen(
            _launch_command(script, private, group, net, interpreter, bool(spec.get("site_paths")), bwrap),
            cwd=private, env=env,
            stdin=subprocess.DEVNULL, stdout=write_end, stderr=write_end, start_new_session=True,
            close_fds=True,
        )
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    keeper = LogKeeper(read_end)
    keeper.start()
    sampler = TreeSampler(proc.pid, group, limits.memory_bytes if group is None else None,
                          limits.sample_interval, on_breach=lambda: _breach(proc.pid, group, breach))
    sampler.start()
    timed_out = oom = False
    pid, status_word, rusage = 0, None, None
    try:
        while True:
            pid, status_word, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if breach.is_set() or (group is not None and group.oom_kills() > 0):
                oom = True
                break
            if time.monotonic() - start > limits.timeout_seconds:
                timed_out = True
                break
            time.sleep(0.01)
    finally:
        wall = time.monotonic() - start
        sampler.sample()
        stragglers = kill_everything(proc.pid, sampler, group, token)
        if status_word is None or not pid:
            _, status_word, rusage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status_word)
        if proc.returncode > 128 and proc.returncode - 128 in signal.valid_signals():
            proc.returncode = 128 - proc.returncode  # the shell's / bwrap's way to say "killed by signal N"
        sampler.stop()
        keeper.finish()
        log_path.write_bytes(keeper.text().encode("utf-8"))
    if breach.is_set() or (group is not None and group.oom_kills() > 0):  # also when the kill won the race
        oom = True
    cpu = rusage.ru_utime + rusage.ru_stime
    cpu = max(cpu, sum(sampler.cpu.values()))
    if group is not None and group.cpu_seconds() is not None:
        cpu = group.cpu_seconds()
    peak_rss = sampler.peak_rss
    # The kernel's own figure where a cgroup enforces the cap (the RSS sum counts shared pages
    # once per process, so it overstates a tree); else the sampled RSS of the tree.
    peak = (group.peak() or peak_rss) if group is not None else peak_rss
    result = _read_result(private / "result.json")
    # Under bwrap the namespace's end kills what the model left running, racing our count; the
    # child counted them before it exited (the model could only make that figure larger).
    left = result.get("left_running")
    if isinstance(left, int) and not isinstance(left, bool) and 0 < left < 1_000_000:
        stragglers = max(stragglers, left)
    predictions = None
    status, reason, message = _verdict(result, proc.returncode, timed_out, oom, limits, peak, wall)
    if status == "ok":
        src = _open_regular(private / "predictions.csv", MAX_OUTPUT_BYTES)
        if src is None:
            status, reason = "failed", "invalid_output:file"
            message = "predictions.csv is missing, not a regular file, linked elsewhere or too large"
        else:
            predictions = str(out_dir / "predictions.csv")
            with src, open(predictions, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return SandboxOutcome(
        status=status, reason=reason, message=message, stage=result.get("stage", "start"),
        predictions_csv=predictions if status == "ok" else None, log=keeper.text(),
        exit_code=proc.returncode, wall_seconds=round(wall, 3), cpu_seconds=round(cpu, 3),
        peak_memory_bytes=int(peak), peak_rss_bytes=int(peak_rss), network_isolation=net,
        memory_enforcement=mem_method, network_attempts=list(result.get("network_attempts", [])),
        checks=list(result.get("checks", [])), stragglers_killed=stragglers,
        traceback=result.get("traceback"),
    )


def _breach(pid: int, group: Cgroup | None, flag: threading.Event) -> None:
    """Kill the tree at once from the sampler thread (the main loop then reports `oom`)."""
    flag.set()
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if group is not None:
        group.kill_all()


def _read_result(path: Path) -> dict:
    src = _open_regular(path, 1_000_000)
    if src is None:
        return {}
    try:
        with src:
            data = json.loads(src.read().decode("utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _verdict(result: dict, exit_code: int | None, timed_out: bool, oom: bool, limits: SandboxLimits,
             peak: int, wall: float) -> tuple[str, str | None, str]:
    """(status, reason, message) from the child's own report and what the parent observed."""
    stage = result.get("stage", "start")
    if timed_out:
        return "failed", "timeout", f"killed after {wall:.1f}s (limit {limits.timeout_seconds:g}s) during {stage}"
    if oom:
        return "failed", "oom", (f"the process tree exceeded {limits.memory_bytes / GIB:.2f} GiB "
                                 f"(peak observed {peak / GIB:.2f} GiB) during {stage}; killed")
    status = result.get("status")
    if result.get("final") and status in ("ok", "failed", "error") and (status != "ok" or exit_code == 0):
        return status, result.get("reason"), result.get("message", "")
    if exit_code is not None and exit_code < 0:
        return "failed", "crash", f"the child died from signal {signal.Signals(-exit_code).name} during {stage}"
    return "failed", "crash", f"the child exited with code {exit_code} during {stage} without a report"
