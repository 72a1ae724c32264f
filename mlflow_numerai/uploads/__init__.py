"""The upload flow, an orchestrator above the registry and the sandbox.

Modules: `validate` (the whole flow: `from mlflow_numerai.uploads.validate import validate`),
`cli` (`mlflow-numerai validate`), `images` (Numerai's runtime images: pins and cached
environments). Imports run one way: uploads -> registry, upload_states, sandbox, packaging.
"""
