"""The program the sandbox child runs: load predict.pkl, call it, check and write its output.

Run as a standalone script in a fresh isolated interpreter (`python -I child.py SPEC.json`).
It must not import mlflow_numerai (nor mlflow, nor pyro): those are blocked here, as they are
absent from Numerai's runtime. Only the standard library is imported before the import blocker
is installed; pandas is imported after it. The output contract (the checks and their names) is
`mlflow_numerai/packaging/contract.py`, which the parent copies next to this script: it is loaded
by path (the spec's `contract`) before the model is unpickled.

The outcome is written to the JSON file named in the spec: {"status": "ok"|"failed"|"error",
"reason": ..., "message": ..., "stage": ..., "network_attempts": [...]}. The parent does not
trust it blindly: it re-checks the written predictions itself.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

STAGES = ("start", "load_inputs", "unpickle", "signature", "predict", "check", "write", "done")

_state: dict = {"status": "error", "reason": "child_incomplete", "message": "", "stage": "start",
                "network_attempts": [], "checks": []}
_spec: dict = {}


class ImportBlocker:
    """A meta-path finder that makes the named top-level packages unimportable."""

    def __init__(self, blocked: list[str]):
        self.blocked = frozenset(blocked)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in self.blocked:
            raise ModuleNotFoundError(
                f"No module named {fullname!r} (not installed in the Numerai runtime)", name=fullname
            )
        return None


def _write_state() -> None:
    """Write the outcome atomically, so the parent never reads half a file."""
    path = _spec.get("result")
    if not path:
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(_state, fh, default=str)
    os.replace(tmp, path)


def _stage(name: str) -> None:
    _state["stage"] = name
    _write_state()


def _left_running() -> int:
    """Processes still alive in this PID namespace besides its init and this one. The kernel
    kills them when the namespace ends, racing the parent's count: this count is exact."""
    count = 0
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) not in (1, os.getpid()):
            try:
                with open(f"/proc/{name}/stat") as fh:
                    count += fh.read().rpartition(")")[2].split()[0] != "Z"  # not a zombie
            except (OSError, IndexError):
                pass
    return count


def _finish(status: str, reason: str | None, message: str = "", exc: BaseException | None = None) -> None:
    _state.update(status=status, reason=reason, message=message, final=True)
    if _spec.get("own_pid_namespace"):
        _state["left_running"] = _left_running()
    if exc is not None:
        _state["traceback"] = "".join(traceback.format_exception(exc))[-8000:]
        sys.stderr.write(_state["traceback"])
    sys.stderr.write(f"[sandbox] {status}: {reason or ''} {message}\n")
    sys.stderr.flush()
    sys.stdout.flush()
    _write_state()
    # Exit now: a model's stray non-daemon threads must not keep the process alive.
    os._exit(0 if status == "ok" else 3)


_INET_FAMILIES = {2, 10}  # AF_INET, AF_INET6


def _audit(event: str, args: tuple) -> None:
    """Record (and with the socket guard, refuse) network access by the model."""
    if event not in ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo"):
        return
    if event == "socket.getaddrinfo":
        family = None
        target = f"{args[0]}:{args[1]}" if len(args) > 1 else str(args)
    else:
        sock = args[0]
        family = getattr(sock, "family", None)
        target = str(args[1]) if len(args) > 1 else ""
        if family is not None and int(family) not in _INET_FAMILIES:
            return  # AF_UNIX etc. (multiprocessing) stays allowed
    if len(_state["network_attempts"]) < 20:
        _state["network_attempts"].append(f"{event} {target}")
    if _spec.get("net_guard"):  # name lookups too: a resolver query is network traffic
        raise PermissionError(1, f"network access is disabled in the sandbox ({event} {target})")


def _classify(exc: BaseException, default: str) -> str:
    """The reason code for an exception raised by the model (or while loading it)."""
    if isinstance(exc, MemoryError):
        return "oom"
    if isinstance(exc, ImportError):
        return "import"
    if _state["network_attempts"] and isinstance(exc, OSError):
        return "network"
    if isinstance(exc, TypeError) and "code" in str(exc) and default == "unpickle":
        # cloudpickle rebuilds code objects with version-specific arguments
        return "python_mismatch"
    return default


def _load_contract(path: str):
    """The output contract module (standalone: numpy and pandas only), loaded from its file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("numerai_output_contract", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # before running it: its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _count_positional(fn) -> tuple[int | None, str]:
    """How many positional arguments `fn` takes (None if it cannot take 1 or 2), and why not."""
    import inspect

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        return None, f"cannot read the signature of {fn!r}: {exc}"
    params = list(sig.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required_kw = [p.name for p in params if p.kind == p.KEYWORD_ONLY and p.default is p.empty]
    varargs = any(p.kind == p.VAR_POSITIONAL for p in params)
    if required_kw:
        return None, f"predict has required keyword-only parameters {required_kw}"
    n = len(positional)
    if n in (1, 2):
        return n, ""
    if n == 0 and varargs:
        return 1, ""
    return None, (f"predict takes {n} positional parameters; Numerai calls it with 1 (live features) "
                  "or 2 (+ benchmark models)")


def main(spec_path: str) -> None:
    global _spec
    with open(spec_path) as fh:
        _spec = json.load(fh)
    sys.path.extend(p for p in _spec.get("site_paths") or [] if p not in sys.path)  # started with -S
    sys.meta_path.insert(0, ImportBlocker(_spec.get("blocked", [])))
    sys.addaudithook(_audit)
    if _spec.get("cpus"):
        os.sched_setaffinity(0, set(_spec["cpus"]))
    if _spec.get("rlimit_as"):
        import resource

        limit = int(_spec["rlimit_as"])
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    _stage("load_inputs")
    try:
        import pandas as pd

        contract = _load_contract(_spec["contract"])
        live = pd.read_pickle(_spec["live"])  # written by the parent, trusted
        benchmarks = pd.read_pickle(_spec["benchmarks"]) if _spec.get("benchmarks") else None
    except BaseException as exc:  # the runtime or the inputs, not the model
        _finish("error", "runtime", f"could not load the inputs: {exc!r}", exc)
    _stage("unpickle")
    try:
        fn = pd.read_pickle(_spec["pickle"])
    except BaseException as exc:
        _finish("failed", _classify(exc, "unpickle"), f"could not unpickle predict.pkl: {exc!r}", exc)
    _stage("signature")
    if not callable(fn):
        _finish("failed", "signature", f"predict.pkl holds a {type(fn).__qualname__}, not a callable")
    nargs, why = _count_positional(fn)
    if nargs is None:
        _finish("failed", "signature", why)
    _stage("predict")
    try:
        if nargs == 2:
            if benchmarks is None:
                benchmarks = pd.DataFrame(index=live.index)
            out = fn(live, benchmarks)
        else:
            out = fn(live)
    except BaseException as exc:
        _finish("failed", _classify(exc, "exception"), f"predict raised {exc!r}", exc)
    _stage("check")
    failures = contract.check_returned(out, _spec.get("profile", "numerai"))
    if failures:
        _state["checks"] = [f.to_dict() for f in failures]
        _finish("failed", failures[0].reason, failures[0].message)
    _stage("write")
    try:
        tmp = _spec["output"] + ".tmp"
        out.to_csv(tmp, index=True)
        os.replace(tmp, _spec["output"])
    except BaseException as exc:
        _finish("failed", _classify(exc, "invalid_output:csv"), f"could not write the predictions as CSV: {exc!r}", exc)
    _state["rows"] = int(len(out))
    _stage("done")
    _finish("ok", None, f"{len(out)} rows written")


if __name__ == "__main__":
    main(sys.argv[1])
