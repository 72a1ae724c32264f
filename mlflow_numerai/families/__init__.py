"""The model families, one package each (`baseline`, `keras_stream`, `bayes_nn`, `varmax`): maths only
(model, fit, predict closure), no MLflow calls and no click; the entry points in `entrypoints/` log them."""
