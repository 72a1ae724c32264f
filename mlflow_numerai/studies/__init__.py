"""Studies across models: the Bayesian NN posterior study (`bnn`) and the Optuna study logic."""
