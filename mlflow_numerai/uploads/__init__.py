"""The upload flow, an orchestrator above the registry and the sandbox.

Modules: `validate` (the flow and its stages: `from mlflow_numerai.uploads.validate import
validate`), `submission` (what is validated, `Submission`, and the frames it runs on), `report`
(`ValidationReport`, diagnostics and the validation run), `images` (Numerai's runtime images: pins
and cached environments). The command is `mlflow_numerai.cli.validate`. Imports run one way:
uploads -> registry, sandbox, packaging, scoring, data, tracking, conventions.
"""
