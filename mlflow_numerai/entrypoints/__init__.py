"""MLflow Projects entry points: one module per command that trains or builds a model and logs it.

`train <family>` (baseline, keras_stream, bayes_nn/bnn_study, varmax), `ensemble`, `study` and
`pipeline` live here, each a click command; each loads data, calls a model family (pure maths in
`mlflow_numerai.families`) or a study/ensemble module, and does the MLflow side: params, metrics
as they come, plots, `log_numerai_model`, evaluation, register. What they share is in
`entrypoints.common` (data options, run start, params, evaluation, registration) and
`entrypoints.options` (the one option vocabulary).
"""
