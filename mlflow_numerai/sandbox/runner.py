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

This module owns one run (`run_pickle`: the private directory, the launch, the wait, the verdict);
the pieces live in `limits`, `isolation`, `cgroups` and `processes`, and their names used
elsewhere are re-exported here.
"""

from __future__ import annotations

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
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import psutil

from mlflow_numerai.conventions import BWRAP_ENV, PREDICT_PKL
from mlflow_numerai.packaging import contract
from mlflow_numerai.sandbox.cgroups import CGROUP_PREFIX, Cgroup, _cgroup_parents, memory_method, remove_stale_cgroups
from mlflow_numerai.sandbox.isolation import (
    INSTALL_HINT,
    PASS_ENV,
    THREAD_ENV,
    TOKEN_ENV,
    bwrap_command,
    bwrap_status,
    child_environment,
    choose_cpus,
    interpreter_paths,
    isolation_method,
    namespace_available,
    network_method,
    site_paths,
)
from mlflow_numerai.sandbox.limits import GIB, SandboxError, SandboxLimits, SandboxOutcome, parse_memory
from mlflow_numerai.sandbox.processes import (
    LOG_HEAD_BYTES,
    LOG_TAIL_BYTES,
    LogKeeper,
    TreeSampler,
    kill_everything,
    kill_on_breach,
)

__all__ = [  # the run, and the names of the pieces that other modules import from here
    "BWRAP_ENV", "CGROUP_PREFIX", "CHILD_SCRIPT", "CONTRACT_SCRIPT", "GIB", "INSTALL_HINT", "LOG_HEAD_BYTES",
    "LOG_TAIL_BYTES", "PASS_ENV", "THREAD_ENV", "TOKEN_ENV", "Cgroup", "LogKeeper", "SandboxError", "SandboxLimits",
    "SandboxOutcome", "TreeSampler", "_cgroup_parents", "bwrap_command", "bwrap_status", "child_environment",
    "choose_cpus", "interpreter_paths", "isolation_method", "kill_everything", "memory_method", "namespace_available",
    "network_method", "parse_memory", "remove_stale_cgroups", "remove_stale_private_dirs", "run_pickle", "site_paths",
]

CHILD_SCRIPT = Path(__file__).with_name("child.py")
CONTRACT_SCRIPT = Path(contract.__file__)  # the output contract: copied next to the child, loaded there by path
BLOCKED_MODULES = ("mlflow", "mlflow_numerai", "pyro")
MAX_OUTPUT_BYTES = 2 * GIB  # a predictions.csv larger than this is not copied out
log = logging.getLogger(__name__)


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
            "pickle": str(shutil.copyfile(pickle_path, private / PREDICT_PKL)),
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
            "contract": str(shutil.copyfile(CONTRACT_SCRIPT, private / "contract.py")),
        }
        (private / "spec.json").write_text(json.dumps(spec))
        script = private / "child.py"
        shutil.copyfile(CHILD_SCRIPT, script)
        command = _launch_command(script, private, group, net, interpreter, bool(spec["site_paths"]), bwrap)
        outcome = _execute(ChildRun(command, private, out_dir, limits, group, net, mem_method, token))
        outcome.isolation = mode
        outcome.warnings = warnings + outcome.warnings
        return outcome
    finally:
        if group is not None and not group.remove() and outcome is not None:
            outcome.warnings.append(f"the sandbox cgroup {group.name} could not be removed (see the log)")
        shutil.rmtree(private, ignore_errors=True)


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


@dataclass(frozen=True)
class ChildRun:
    """What one launch of the child needs: its command line, where it runs and how it is held."""

    command: list[str]  # from _launch_command
    private: Path  # the child's private directory (cwd, HOME, TMPDIR; spec, pickle, inputs)
    out_dir: Path  # receives child.log and predictions.csv
    limits: SandboxLimits
    group: Cgroup | None  # the run's cgroup, None in the rlimit+sampler fallback
    net: str  # network method: namespace | guard
    mem_method: str  # cgroup-v2 | cgroup-v1 | rlimit+sampler
    token: str  # carried in the environment of every process of the run


def _execute(run: ChildRun) -> SandboxOutcome:
    """Launch the child, wait for it under the limits, kill whatever is left, read its verdict."""
    private, out_dir, limits, group, net, token = run.private, run.out_dir, run.limits, run.group, run.net, run.token
    log_path = out_dir / "child.log"
    env = child_environment(private, limits.cpus, token)
    breach = threading.Event()
    start = time.monotonic()
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.Popen(
            run.command,
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
                          limits.sample_interval, on_breach=lambda: kill_on_breach(proc.pid, group, breach))
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
        memory_enforcement=run.mem_method, network_attempts=list(result.get("network_attempts", [])),
        checks=list(result.get("checks", [])), stragglers_killed=stragglers,
        traceback=result.get("traceback"),
    )


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
