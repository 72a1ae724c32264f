"""Isolation of the child from this machine: bubblewrap, network namespaces, the environment.

Owns the choice of isolation (`isolation_method`: `bwrap` where bubblewrap runs, else the fallback
`namespaces` or `guard`, with a warning), the network method (`unshare --net` or the child's
socket guard), the bwrap command line (a read-only view of the interpreter, its site paths and
the system libraries; the private directory as the only writable place), the interpreter's paths
and the child's scrubbed environment (a whitelist, private HOME/TMPDIR, one-thread settings, the
run's token).
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

from mlflow_numerai.conventions import BWRAP_ENV
from mlflow_numerai.sandbox.limits import SandboxError, SandboxLimits

TOKEN_ENV = "SANDBOX_RUN_TOKEN"  # every process of one run carries it (found even when it escapes the tree)
THREAD_ENV = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS", "BLIS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
    "TORCH_NUM_THREADS", "POLARS_MAX_THREADS", "RAYON_NUM_THREADS",
)
PASS_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")
INSTALL_HINT = "install it with `apt-get install bubblewrap` (Debian/Ubuntu)"


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

def site_paths(interpreter: str) -> list[str] | None:
    """The site-packages directories to put on the child's path when it starts without `site`
    (`-S`: no .pth files run, e.g. no editable-install finders; faster). None for another
    interpreter, which then keeps its own `site` processing. A virtual environment is told by its
    directory (pyvenv.cfg), not by the real file: its python links to the same base interpreter."""
    if os.path.dirname(os.path.abspath(interpreter)) != os.path.dirname(os.path.abspath(sys.executable)):
        return None
    return [p for p in site.getsitepackages() if os.path.isdir(p)]


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
