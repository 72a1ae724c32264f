"""Numerai's runtime images: their exact pins, and a cached virtual environment per image.

Numerai runs an uploaded predict.pkl in `python:3.X-slim` with exactly the packages of
`image_pins/py3.X-requirements.txt` (vendored from numerai/numerai-predict, see `PROVENANCE`).
`ImageEnv.ensure()` builds that environment once under `<MLFLOW_NUMERAI_CACHE>/images/` with the
core pins (numpy, pandas, cloudpickle, pyarrow, scipy, scikit-learn and what they need), with
`uv` when available (else pip): built in a temporary sibling and renamed into place, under a file
lock, so a failed or concurrent build never leaves a half-made environment. Heavy packages
(torch, tensorflow, polars, ...) are installed into it only when a pickle references them
(`pickle_modules` scans its globals, `plan` maps modules to pinned distributions).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import pickletools
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

from mlflow_numerai.data.io import cache_root

IMAGES = ("py3.10", "py3.11", "py3.12", "py3.13")
PROVENANCE = {
    "repository": "numerai/numerai-predict",
    "files": "py3.X/requirements.txt",
    "commit": "19d1769589f83898a293f398e58c0bb1f0943c61",
    "date": "2026-04-14",
}
CORE = ("numpy", "pandas", "cloudpickle", "pyarrow", "scipy", "scikit-learn")
# Image pins never installed (name prefixes). Empty: the image's nvidia-*/triton CUDA wheels (GBs)
# look skippable, but PyPI's torch wheel does not import without them (measured: torch 2.7.1
# raises "libcudart.so.12: cannot open shared object file"), and the CPU build is only on
# PyTorch's own index. They are installed, once, when a pickle needs torch.
SKIPPED_PREFIXES: tuple[str, ...] = ()
# Top-level import names whose distribution is named otherwise (the rest: `_` -> `-`, lower case).
IMPORT_TO_DIST = {
    "sklearn": "scikit-learn", "yaml": "pyyaml", "dateutil": "python-dateutil", "PIL": "pillow",
    "google": "protobuf", "absl": "absl-py", "attr": "attrs", "pasta": "google-pasta", "grpc": "grpcio",
    "clang": "libclang", "markdown_it": "markdown-it-py", "pkg_resources": "setuptools",
    "_distutils_hack": "setuptools", "tf_keras": "tf-keras", "lightning_fabric": "pytorch-lightning",
    "sympy": "sympy", "tensorflow_decision_forests": "tensorflow-decision-forests",
    "google_auth_oauthlib": "google-auth-oauthlib", "jwt": "pyjwt",
}
# Modules that need no distribution (besides the standard library).
ALWAYS_THERE = frozenset({"builtins", "__builtin__", "copy_reg", "__main__", "_codecs", "copyreg"})
INSTALL_TIMEOUT = 1800.0  # seconds, one installer call
ENV_MARKER = "numerai-image.json"


class ImageError(RuntimeError):
    """An image environment cannot be made here (no interpreter, the installer failed)."""


def cache_dir() -> Path:
    """Where the image environments live: `<MLFLOW_NUMERAI_CACHE>/images`."""
    return cache_root() / "images"


def image_of_python(python: str) -> str:
    """'3.11' -> 'py3.11'."""
    return f"py{python}"


def python_of_image(image: str) -> str:
    """'py3.11' -> '3.11'."""
    return image[2:]


@cache
def pins_text(image: str) -> str:
    if image not in IMAGES:
        raise ValueError(f"image must be one of {list(IMAGES)}, got {image!r}")
    return resources.files("mlflow_numerai.uploads").joinpath("image_pins", f"{image}-requirements.txt").read_text()


def canonical(name: str) -> str:
    """A distribution name as PEP 503 normalises it."""
    return re.sub(r"[-_.]+", "-", name).lower()


@cache
def pins(image: str) -> dict[str, str]:
    """{distribution: version} of Numerai's image (canonical names, file order)."""
    out = {}
    for line in pins_text(image).splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            out[canonical(name.split("[", 1)[0].strip())] = version.split(";", 1)[0].strip()
    return out


def skipped(dist: str) -> bool:
    return dist.startswith(SKIPPED_PREFIXES)


def dist_of_module(module: str, image: str) -> str | None:
    """The pinned distribution providing top-level `module` in `image`, or None."""
    top = module.partition(".")[0]
    image_pins = pins(image)
    for candidate in (IMPORT_TO_DIST.get(top), canonical(top)):
        if candidate and candidate in image_pins:
            return candidate
    return None


def is_stdlib(module: str) -> bool:
    top = module.partition(".")[0]
    return top in sys.stdlib_module_names or top in ALWAYS_THERE


# ----------------------------------------------------------------------------- the pickle's imports
_STRING_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING",
                         "BINSTRING", "STRING"})
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_SUBIMPORT = frozenset({"subimport", "dynamic_subimport"})


def pickle_modules(path: str | os.PathLike) -> set[str] | None:
    """The modules a pickle imports when loaded (GLOBAL/STACK_GLOBAL module names, and the modules
    cloudpickle pickles by reference through `subimport`), or None if it cannot be parsed (the
    child then reports the unpickling error). Nothing is executed."""
    try:
        data = Path(path).read_bytes()
        ops = list(pickletools.genops(data))
    except Exception:
        return None
    modules: set[str] = set()
    memo: dict[int, str | None] = {}
    recent: list[str | None] = []  # values pushed by string and memo-get opcodes
    want_module = False  # the next string is subimport's argument
    for op, arg, _pos in ops:
        name = op.name
        value = None
        if name in _STRING_OPS:
            value = arg.decode("latin-1") if isinstance(arg, bytes) else str(arg)
        elif name in _GET_OPS:
            value = memo.get(arg)
        elif name == "MEMOIZE":
            memo[len(memo)] = recent[-1] if recent else None
            continue
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = recent[-1] if recent else None
            continue
        elif name in ("FRAME", "PROTO"):
            continue
        if name == "GLOBAL":
            module, _, attr = str(arg).partition(" ")
            modules.add(module)
            want_module = attr in _SUBIMPORT
        elif name == "STACK_GLOBAL":
            module, attr = (recent[-2], recent[-1]) if len(recent) >= 2 else (None, None)
            if module:
                modules.add(module)
            want_module = attr in _SUBIMPORT
        elif value is not None and want_module:
            modules.add(value)
            want_module = False
        recent.append(value)
        del recent[:-4]
    return {m for m in modules if m}


@dataclass
class Plan:
    """What a pickle needs from an image: distributions to install, modules the image lacks."""

    image: str
    modules: list[str]
    dists: list[str]
    missing: list[str]


def plan(image: str, modules: set[str] | None) -> Plan:
    """Map the pickle's modules to the image's pinned distributions (core ones included)."""
    modules = modules or set()
    tops = sorted({m.partition(".")[0] for m in modules if not is_stdlib(m)})
    dists, missing = set(), []
    for top in tops:
        dist = dist_of_module(top, image)
        if dist is None:
            missing.append(top)
        elif dist not in CORE:
            dists.add(dist)
    return Plan(image, tops, sorted(dists), missing)


# ----------------------------------------------------------------------------- interpreters
def _version_of(executable: str) -> str | None:
    try:
        out = subprocess.run([executable, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@cache
def find_interpreter(python: str) -> str:
    """A working `pythonX.Y`: on PATH, else one pyenv installed but did not select; ImageError
    saying how to get it otherwise."""
    candidates = [shutil.which(f"python{python}")]
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    pattern = os.path.join(root, "versions", f"{python}.*", "bin", f"python{python}")
    candidates += sorted(glob.glob(pattern), reverse=True)
    for candidate in candidates:
        if candidate and _version_of(candidate) == python:
            return os.path.realpath(candidate)
    raise ImageError(
        f"no working python{python} here, needed for Numerai's py{python} image: install it (e.g. "
        f"`pyenv install {python}` or `uv python install {python}`) so `python{python}` is on PATH, "
        f"or validate with --image none (this environment, not Numerai's)"
    )


def uv_path() -> str | None:
    """uv on PATH, else the one installed beside this interpreter (the `dev` extra's, in a venv)."""
    return shutil.which("uv") or shutil.which("uv", path=os.path.dirname(sys.executable))


def installer() -> str:
    """'uv' when available (seconds), else 'pip'."""
    return "uv" if uv_path() else "pip"


# ----------------------------------------------------------------------------- environments
@dataclass
class EnvInfo:
    """What `ImageEnv.ensure` did: the interpreter to run, and what was built or installed."""

    image: str
    python: str  # the environment's interpreter
    path: str
    built: bool  # this call built the environment
    installed: list[str] = field(default_factory=list)  # distributions this call installed
    build_seconds: float = 0.0
    install_seconds: float = 0.0
    pins: dict[str, str] = field(default_factory=dict)  # what the environment holds from the image
    skipped: list[str] = field(default_factory=list)  # image pins left out (SKIPPED_PREFIXES)
    installer: str = ""


class ImageEnv:
    """The cached environment of one image, under `root` (default `<cache root>/images`)."""

    def __init__(self, image: str, root: str | os.PathLike | None = None, progress=None):
        self.image = image
        self.python_version = python_of_image(image)
        self.pins = pins(image)
        key = hashlib.sha256((pins_text(image) + repr(SKIPPED_PREFIXES) + "2").encode()).hexdigest()[:12]
        self.root = Path(root) if root else cache_dir()
        self.path = self.root / f"{image}-{key}"
        self.progress = progress or (lambda message: None)

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def marker(self) -> dict | None:
        try:
            return json.loads((self.path / ENV_MARKER).read_text())
        except (OSError, ValueError):
            return None

    @contextlib.contextmanager
    def _lock(self):
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".{self.path.name}.lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file closes, even if we die
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def ensure(self, dists: list[str] = ()) -> EnvInfo:
        """The environment with the core pins and `dists` (pinned names), built or completed now
        if needed. Raises ImageError when the interpreter or the installer fails (nothing
        half-made is left: a failed build is removed, a failed install is not recorded)."""
        wanted = [d for d in dists if d not in CORE]
        unknown = [d for d in wanted if d not in self.pins]
        if unknown:
            raise ImageError(f"{unknown} are not in Numerai's {self.image} image")
        info = EnvInfo(self.image, str(self.python), str(self.path), built=False, installer=installer(),
                       skipped=sorted(d for d in self.pins if skipped(d)))
        with self._lock():
            marker = self.marker()
            if marker is None:
                started = time.perf_counter()
                self._build()
                info.built, info.build_seconds = True, round(time.perf_counter() - started, 2)
                marker = self.marker()
            todo = [d for d in wanted if d not in marker["extras"]]
            if todo:
                started = time.perf_counter()
                self.progress(f"installing {', '.join(todo)} from Numerai's {self.image} pins")
                self._install(self.python, todo, self.path)
                marker["extras"] = sorted(set(marker["extras"]) | set(todo))
                self._write_marker(self.path, marker)
                info.installed, info.install_seconds = todo, round(time.perf_counter() - started, 2)
        info.pins = self.installed_pins()
        return info

    def installed_pins(self) -> dict[str, str]:
        """The image pins the environment holds (distribution -> version), from its metadata."""
        site = glob.glob(str(self.path / "lib" / "python*" / "site-packages"))
        found = {}
        for dist_info in glob.glob(os.path.join(site[0], "*.dist-info")) if site else []:
            name, _, version = Path(dist_info).name[:-len(".dist-info")].partition("-")
            dist = canonical(name)
            if self.pins.get(dist) == version:
                found[dist] = version
        return dict(sorted(found.items()))

    def _build(self) -> None:
        interpreter = find_interpreter(self.python_version)
        tmp = self.root / f".tmp-{self.path.name}-{uuid.uuid4().hex[:8]}"
        self.progress(f"building Numerai's {self.image} environment in {self.path} ({installer()})")
        try:
            if installer() == "uv":
                self._run([uv_path(), "venv", "--quiet", "--python", interpreter, "--no-python-downloads", str(tmp)])
            else:
                self._run([interpreter, "-m", "venv", str(tmp)])
            self._install(tmp / "bin" / "python", list(CORE), tmp)
            self._write_marker(tmp, {"image": self.image, "python": self.python_version,
                                     "interpreter": interpreter, "provenance": PROVENANCE,
                                     "core": list(CORE), "extras": [], "installer": installer(),
                                     "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
            if self.path.exists():  # an unmarked leftover (e.g. removed by hand mid-way)
                shutil.rmtree(self.path)
            os.rename(tmp, self.path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _install(self, python: Path, dists: list[str], prefix: Path) -> None:
        requested = [f"{d}=={self.pins[d]}" for d in dists]
        with tempfile.TemporaryDirectory(prefix="numerai-image-") as tmp:
            constraints = Path(tmp) / "constraints.txt"
            constraints.write_text("".join(f"{d}=={v}\n" for d, v in self.pins.items() if not skipped(d)))
            excludes = Path(tmp) / "excludes.txt"
            excludes.write_text("".join(f"{d}\n" for d in self.pins if skipped(d)))
            if installer() == "uv":
                cmd = [uv_path(), "pip", "install", "--quiet", "--compile-bytecode", "--python", str(python),
                       "-c", str(constraints), *(["--excludes", str(excludes)] if SKIPPED_PREFIXES else []),
                       *requested]
            else:  # pip cannot exclude: SKIPPED_PREFIXES only apply with uv
                cmd = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                       "-c", str(constraints), *requested]
            self._run(cmd)

    @staticmethod
    def _write_marker(prefix: Path, marker: dict) -> None:
        tmp = prefix / f".{ENV_MARKER}.tmp"
        tmp.write_text(json.dumps(marker, indent=2))
        os.replace(tmp, prefix / ENV_MARKER)

    @staticmethod
    def _run(cmd: list[str]) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, env=env)
        except subprocess.TimeoutExpired as exc:
            raise ImageError(f"{cmd[0]} {' '.join(cmd[1:3])} took over {INSTALL_TIMEOUT:.0f} s") from exc
        except OSError as exc:
            raise ImageError(f"cannot run {cmd[0]}: {exc}") from exc
        if out.returncode != 0:
            detail = (out.stderr or out.stdout)[-2000:]
            raise ImageError(f"{' '.join(cmd[:3])} failed (exit {out.returncode}): {detail}")
