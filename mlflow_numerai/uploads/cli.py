"""Old home of `mlflow-numerai validate`, kept only while tests outside uploads import it from here
(tests/test_sandbox.py, tests/test_sandbox_isolation.py): the command is `mlflow_numerai.cli.validate`.
This shim imports upward (uploads -> cli); delete it once those imports point at the new home."""

from mlflow_numerai.cli.validate import validate  # noqa: F401
