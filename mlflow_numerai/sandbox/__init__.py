"""Run a predict.pkl in a child process under Numerai's limits; the upload state machine.

Modules: `validate` (the whole upload flow: `from mlflow_numerai.sandbox.validate import
validate`), `runner` (one sandboxed child run: `run_pickle`, `SandboxLimits`), `child` (the
script the child runs; imports nothing of this package), `checks` (output checks), `states`
(the upload state machine), `cli` (`mlflow-numerai validate`).
"""
