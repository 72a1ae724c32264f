"""The errors of packaging: a predict function or model that cannot be a Numerai upload.

`PackagingError` is a bad input (`mlflow_numerai.errors.InputError`, so still a ValueError);
`OutputContractError` names the failed check of `mlflow_numerai.packaging.contract.CHECKS`.
"""

from __future__ import annotations

from mlflow_numerai.errors import InputError


class PackagingError(InputError):
    """A predict function or model cannot be packaged as a Numerai upload."""


class OutputContractError(PackagingError):
    """Predictions break the output contract; `check` names the failed check (one of
    `contract.CHECKS`: none, type, empty, columns, dtype, index, nan, range, constant)."""

    def __init__(self, check: str, message: str):
        super().__init__(f"invalid predictions ({check}): {message}")
        self.check = check
