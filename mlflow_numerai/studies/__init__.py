"""Studies: the Optuna hyper-parameter study machinery (`studies.optuna`) and the Bayesian NN
priors x architectures study maths (`studies.bnn`). Free of click; the commands live in
`mlflow_numerai.entrypoints`."""
