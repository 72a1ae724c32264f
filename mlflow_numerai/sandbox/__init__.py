"""Run a predict.pkl in a child process under Numerai's limits; the upload state machine.

Public API: `validate` (the whole upload flow, see `validate.py`), `run_pickle` and
`SandboxLimits` (one sandboxed child run, see `runner.py`).
"""

from __future__ import annotations


def __getattr__(name: str):
    # Lazy, so `mlflow_numerai.sandbox.states` stays importable without pandas/psutil.
    if name in ("validate", "ValidationReport", "ValidationArgumentError"):
        from mlflow_numerai.sandbox import validate as module

        return getattr(module, name)
    if name in ("run_pickle", "SandboxLimits", "SandboxOutcome", "SandboxError", "parse_memory"):
        from mlflow_numerai.sandbox import runner

        return getattr(runner, name)
    raise AttributeError(name)
