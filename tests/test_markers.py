"""The `e2e` marker: the default run (pyproject addopts) deselects everything under tests/e2e,
and `make test` (what CI runs) selects it again."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _collect(*args: str) -> tuple[list[str], str]:
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=500)
    ids = [line for line in done.stdout.splitlines() if "::" in line]
    return ids, done.stdout


def test_default_run_deselects_every_test_under_e2e_and_make_test_selects_them():
    ids, out = _collect("tests/e2e")
    assert ids == [], f"not marked e2e: {ids}"
    deselected = int(re.search(r"(\d+) deselected", out).group(1))
    everything, _ = _collect("-m", "e2e or not e2e", "tests/e2e")
    assert len(everything) == deselected > 0
    make = subprocess.run(["make", "-n", "test"], cwd=REPO, capture_output=True, text=True, timeout=60).stdout
    assert '-m pytest -m "e2e or not e2e"' in make
