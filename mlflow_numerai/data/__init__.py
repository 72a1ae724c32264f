"""Numerai data: reading a data directory, the synthetic generator, the downloader, the caches.

Bottom up: `files` (DataError, the cache root, atomic directory writes) < `synthetic_layout`
(a synthetic set's parameters, columns and parquet writers) < `synthetic` (the generative model,
`generate_synthetic`) < `io` (reading a v5 data directory, `resolve_data_dir`); `numerai` (the
numerapi download) and `cache` (the era-sharded int8 cache) < `stream` (batches for Keras and
torch) use `files`. The `mlflow-numerai data` command is `mlflow_numerai.cli.data`.
"""
