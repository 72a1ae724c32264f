"""The model registry side of uploads: upload states on model versions, and promotion.

Modules, lowest first: `states` (the transition table, `UploadStateMachine`; imports nothing of
the package), `store` (the client, retried writes, `RegistryError`), `aliases` (taking aliases
back from a failed version), `versions` (`models:/` URIs, upload-state tags, `RegistryRecorder`,
lost validators), `promotion` (gates, `promote`, the audit trail). The tag names are in
`mlflow_numerai.conventions`. The registry imports nothing above it: the upload flow that drives
it is `mlflow_numerai.uploads`, the `promote` command `mlflow_numerai.cli.promote`.
"""

from mlflow_numerai.registry.aliases import restore_alias, revoke_aliases
from mlflow_numerai.registry.promotion import (
    CORR_METRICS,
    SHARPE_METRICS,
    Gate,
    PromotionError,
    PromotionResult,
    evaluate_gates,
    promote,
)
from mlflow_numerai.registry.states import LOST_REASON, Transition, TransitionError, UploadStateMachine
from mlflow_numerai.registry.store import RegistryError, get_client, retrying
from mlflow_numerai.registry.versions import (
    RegistryRecorder,
    correct_lost,
    holder_alive,
    holder_record,
    latest_version,
    lost_grace,
    lost_since,
    parse_models_uri,
    resolve_model_version,
    upload_history,
    upload_state,
)

__all__ = [
    "CORR_METRICS",
    "LOST_REASON",
    "SHARPE_METRICS",
    "Gate",
    "PromotionError",
    "PromotionResult",
    "RegistryError",
    "RegistryRecorder",
    "Transition",
    "TransitionError",
    "UploadStateMachine",
    "correct_lost",
    "evaluate_gates",
    "get_client",
    "holder_alive",
    "holder_record",
    "latest_version",
    "lost_grace",
    "lost_since",
    "parse_models_uri",
    "promote",
    "resolve_model_version",
    "restore_alias",
    "retrying",
    "revoke_aliases",
    "upload_history",
    "upload_state",
]
