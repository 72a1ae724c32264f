"""The registry's client and its writes: the default `MlflowClient`, retried writes and state reads.

Owns `RegistryError` (a name, version or alias that does not exist or cannot be used), the
retry of the transient conflicts concurrent writers meet on one store, and the one read every
part of the registry shares (a version's current upload state). Imports only `conventions` and
`errors` of the package.
"""

from __future__ import annotations

import time

from mlflow_numerai.conventions import UPLOAD_STATE_TAG
from mlflow_numerai.errors import InputError

# SQLite's and PostgreSQL's words for the same conflicts (psycopg's appear without "IntegrityError")
TRANSIENT_MARKS = ("UNIQUE constraint", "IntegrityError", "UniqueViolation", "duplicate key value", "locked",
                   "were matched")


class RegistryError(InputError):
    """A model name, version or alias does not exist or cannot be used."""


def get_client(client=None):
    """`client`, else an `MlflowClient` on the tracking URI in force."""
    from mlflow import MlflowClient

    return client or MlflowClient()


def retrying(call, *args, attempts: int = 8):
    """Run a registry write, retrying the transient conflicts of concurrent writers (SQLite's
    "database is locked", two writers inserting the same new tag at once, on SQLite or on a
    PostgreSQL team server, or an alias row that another writer updated or deleted under us:
    SQLAlchemy's "0 were matched")."""
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            return call(*args)
        except MlflowException as exc:
            text = str(exc)
            transient = any(mark in text for mark in TRANSIENT_MARKS)
            if not transient or attempt == attempts - 1:
                raise
            time.sleep(0.02 * (attempt + 1))


def state_of(client, name: str, version: str) -> str | None:
    """The upload state tag of a model version as stored now (None if never validated)."""
    return client.get_model_version(name, str(version)).tags.get(UPLOAD_STATE_TAG)
