"""Run a predict.pkl in a child process under Numerai's limits.

Modules: `runner` (one sandboxed child run: `run_pickle`; re-exports the names below that other
modules use), `limits` (`SandboxLimits`, `SandboxOutcome`, `SandboxError`, `parse_memory`),
`isolation` (bubblewrap, network namespace or socket guard, the child's scrubbed environment),
`cgroups` (the run's cgroup and the removal of stale ones), `processes` (sampling and killing the
process tree, the bounded log), `child` (the script the child runs; imports nothing of this
package and loads the output contract, `mlflow_numerai/packaging/contract.py`, by path), `checks`
(the parent's checks on the written CSV, from that contract). The sandbox imports only
`packaging.contract` and `conventions` of the package: the upload flow that drives it is
`mlflow_numerai.uploads`, the upload states are `mlflow_numerai.registry.states`.
"""
