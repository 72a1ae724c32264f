"""Run a predict.pkl in a child process under Numerai's limits.

Modules: `runner` (one sandboxed child run: `run_pickle`, `SandboxLimits`), `child` (the script
the child runs; imports nothing of this package), `checks` (output checks). The sandbox imports
nothing above it: the upload flow that drives it is `mlflow_numerai.uploads`, the upload states
are `mlflow_numerai.upload_states` (next to `registry.py`).
"""
