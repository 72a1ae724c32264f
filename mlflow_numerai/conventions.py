"""Names shared across the package: tags, environment variables and artifact names.

A name written in two modules lives here, so a reader finds each one once. Imports nothing of
the package (it is the bottom layer; see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

# ---------------------------------------------------------------------------- run tags
FAMILY_TAG = "numerai.family"  # baseline | keras_stream | bayes_nn | varmax | ensemble
DATA_VERSION_TAG = "numerai.data_version"
FEATURE_SET_TAG = "numerai.feature_set"
RUN_ID_TAG = "numerai.run_id"  # on a model version: the run that logged it
REGISTERED_VERSION_TAG = "numerai.registered_version"
PIPELINE_TAG = "numerai.pipeline"
CHURN_TAG = "numerai.churn"
STUDY_TAG = "numerai.study"
STUDY_TRIAL_TAG = "numerai.study_trial"

# ---------------------------------------------------------------------------- model-version tags
UPLOAD_STATE_TAG = "numerai.upload_state"
UPLOAD_REASON_TAG = "numerai.upload_reason"
UPLOAD_MESSAGE_TAG = "numerai.upload_message"
UPLOAD_HISTORY_TAG = "numerai.upload_history"
UPLOAD_HOLDER_TAG = "numerai.upload_holder"
VALIDATION_RUN_TAG = "numerai.validation_run_id"
PROMOTION_PREFIX = "numerai.promotion"  # numerai.promotion.<alias>

# ---------------------------------------------------------------------------- ensembles
ENSEMBLE_MEMBERS_TAG = "numerai.ensemble.members"
ENSEMBLE_WEIGHTS_TAG = "numerai.ensemble.weights"
ENSEMBLE_NEUTRALIZATION_TAG = "numerai.ensemble.neutralization"
ENSEMBLE_OBJECTIVE_TAG = "numerai.ensemble.objective"

# ---------------------------------------------------------------------------- environment
DATA_VERSION_ENV = "MLFLOW_NUMERAI_DATA_VERSION"
FEATURE_SET_ENV = "MLFLOW_NUMERAI_FEATURE_SET"
CACHE_ENV = "MLFLOW_NUMERAI_CACHE"
IMAGE_ENV = "MLFLOW_NUMERAI_IMAGE"  # the default of `validate --image`
BWRAP_ENV = "MLFLOW_NUMERAI_BWRAP"  # path of bwrap; a missing path forces the fallback (tests)
LOST_GRACE_ENV = "MLFLOW_NUMERAI_LOST_GRACE"
STUDY_STORAGE_ENV = "MLFLOW_NUMERAI_STUDY_STORAGE"
TRACEBACK_ENV = "MLFLOW_NUMERAI_TRACEBACK"  # 1: the command line shows tracebacks

# ---------------------------------------------------------------------------- artifacts
MODEL_ARTIFACT = "model"  # the pyfunc wrapping predict.pkl
PREDICT_PKL = "predict.pkl"

# ---------------------------------------------------------------------------- data
MIDDLE_BIN = 2  # what a missing (NaN) feature value counts as, in the models and the scores

# scoring (the `numerai` evaluator's artifacts, read back by the dashboard and by churn)
EVAL_DIR = "numerai_eval"
PER_ERA_CORR_FILE = "per_era_corr.csv"  # index era, one column per target
PER_ERA_DIAGNOSTICS_FILE = "per_era_diagnostics.csv"  # index era, one column per diagnostic
EVAL_PREDICTIONS_FILE = "predictions.parquet"  # the evaluated predictions (churn of the next version)

# registry
VALIDATION_TARGET_TAG = "numerai.validation.target"  # on a validation run: the TARGET validated
VALIDATION_MODEL_NAME_TAG = "numerai.validation.model_name"  # on a validation run: the registered model
VALIDATION_MODEL_VERSION_TAG = "numerai.validation.model_version"
DEPLOYMENT_TAG_PREFIX = "numerai.deployment."  # registered-model tag numerai.deployment.<name>: a deployment
UPLOAD_ID_TAG = "numerai.upload.id"  # on a model version: Numerai's id of its numerapi upload
PACKAGE_VERSION_TAG = "mlflow_numerai.version"  # run tags of the run context provider
PYTHON_TAG = "mlflow_numerai.python"

# cli (entry points)
BNN_MODEL_TAG = "bnn.model"  # on a bnn_study child run: "<prior>/<hidden>" or "baseline/<hidden>"
BNN_PRIOR_TAG = "bnn.prior"
BNN_HIDDEN_TAG = "bnn.hidden"
BNN_BEST_MODEL_TAG = "bnn.best_model"  # on the bnn_study parent run
