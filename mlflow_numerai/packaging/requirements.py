"""What a pickle needs where it is loaded: the modules it imports and their distributions.

`pickled_modules` reads a pickle's opcodes (globals and cloudpickle subimports) without loading
it; `requirements_of` maps modules to installed distributions and versions (recorded on the
model); `local_modules` finds modules that are neither stdlib nor installed (a pickle referring to
them fails in Numerai's runner).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import io
import os
import pickletools
import site
import sys
import sysconfig
from typing import Any

# Modules a Numerai upload must not need: Numerai's runner does not have them.
NOT_IN_NUMERAI_RUNNER = ("mlflow", "mlflow_numerai", "pyro")
# Always needed to load a predict.pkl.
BASE_REQUIREMENTS = ("cloudpickle", "numpy", "pandas")

_STRING_OPS = {
    "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE",
    "SHORT_BINSTRING", "BINSTRING", "STRING",
}  # fmt: skip
_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
_SUBIMPORTS = {"subimport", "dynamic_subimport"}


def pickled_modules(data: bytes) -> set[str]:
    """Names of the modules a pickle imports when loaded (globals and cloudpickle subimports)."""
    modules: set[str] = set()
    memo: dict[int, Any] = {}
    recent: list[Any] = []  # values pushed lately (str, or None for anything else)
    want_module = False
    for op, arg, _ in pickletools.genops(io.BytesIO(data)):
        name = op.name
        if name in _STRING_OPS:
            value = arg.decode("latin-1") if isinstance(arg, bytes) else arg
        elif name in _GET_OPS:
            value = memo.get(arg)
        elif name == "MEMOIZE":
            memo[len(memo)] = recent[-1] if recent else None
            continue
        elif name in _PUT_OPS:
            memo[arg] = recent[-1] if recent else None
            continue
        elif name == "GLOBAL":
            module, _, attr = arg.partition(" ")
            modules.add(module)
            want_module = attr in _SUBIMPORTS
            recent.append(None)
            continue
        elif name == "STACK_GLOBAL":
            module, attr = (recent[-2:] + [None, None])[:2] if len(recent) >= 2 else (None, None)
            if isinstance(module, str):
                modules.add(module)
            want_module = attr in _SUBIMPORTS
            recent.append(None)
            continue
        else:
            recent.append(None)
            continue
        if want_module and isinstance(value, str):
            modules.add(value)
            want_module = False
        recent.append(value)
        del recent[:-4]
    return modules


# Top-level module -> distribution names to try, where they differ (the rest: the module name).
_DISTRIBUTIONS = {
    "sklearn": ("scikit-learn",),
    "tensorflow": ("tensorflow", "tensorflow-cpu"),
    "pyro": ("pyro-ppl",),
    "yaml": ("PyYAML",),
    "PIL": ("pillow",),
    "cv2": ("opencv-python", "opencv-python-headless"),
}


@functools.lru_cache(maxsize=256)
def _distribution_version(top: str) -> tuple[str, str] | None:
    """(distribution, version) of the installed package providing module `top`, if any."""
    for dist in _DISTRIBUTIONS.get(top, (top,)):
        try:
            return dist.lower().replace("_", "-"), importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def requirements_of(modules: set[str]) -> dict[str, str]:
    """{distribution: version} of the installed third-party packages behind `modules`, plus
    cloudpickle, numpy and pandas."""
    tops = {m.split(".")[0] for m in modules} | set(BASE_REQUIREMENTS)
    tops -= set(sys.stdlib_module_names) | {"builtins", "__main__", "mlflow_numerai"}
    found = dict(filter(None, (_distribution_version(top) for top in sorted(tops))))
    return dict(sorted(found.items()))


def local_modules(modules: set[str]) -> list[str]:
    """The top-level modules among `modules` that are neither stdlib nor installed packages
    (e.g. a script next to the notebook): a pickle referring to them fails to load elsewhere."""
    roots = {sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib", "platstdlib")}
    roots |= set(site.getsitepackages())
    tops = {m.split(".")[0] for m in modules} - set(sys.stdlib_module_names) - set(sys.builtin_module_names)
    tops -= {"__main__", "mlflow_numerai"}  # __main__ and this package are pickled by value
    local = []
    for top in sorted(tops):
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            spec = None
        where = spec and (spec.origin or next(iter(spec.submodule_search_locations or []), None))
        if not where or where in ("built-in", "frozen"):
            continue
        if not any(os.path.abspath(where).startswith(os.path.abspath(root) + os.sep) for root in roots):
            local.append(top)
    return local
