"""Taking aliases back from a model version that failed its upload validation.

A promotion moves an alias onto a Success version and records the previous holder on the
registered model (`numerai.promotion.<alias>.previous_version`). When that version later turns
`Failed`/`Error`, `revoke_aliases` points each such alias back at the previous holder if that one
is still Success, else deletes it, and records why (`numerai.promotion.<alias>.revoked`).
"""

from __future__ import annotations

import json

from mlflow_numerai.conventions import PROMOTION_PREFIX
from mlflow_numerai.registry.states import SUCCESS, utc_now
from mlflow_numerai.registry.store import get_client, retrying, state_of


def revoke_aliases(name: str, version: str, client=None, why: str = "") -> list[str]:
    """Take back every alias a promotion put on `version` (now failed): back to the previous holder
    when that one is still Success, else remove it. Returns the aliases taken back."""
    client = get_client(client)
    model = client.get_registered_model(name)
    taken = []
    for alias, holder in dict(model.aliases).items():
        if str(holder) != str(version):
            continue
        previous = model.tags.get(f"{PROMOTION_PREFIX}.{alias}.previous_version")
        retrying(restore_alias, client, name, alias, str(version), previous)
        retrying(client.set_registered_model_tag, name, f"{PROMOTION_PREFIX}.{alias}.revoked",
                 json.dumps({"version": str(version), "time": utc_now(), "why": why}))
        taken.append(alias)
    return taken


def restore_alias(client, name: str, alias: str, bad_version: str, previous: str | None) -> str | None:
    """Point `alias` back at `previous` if it is Success (else delete it), unless the alias has
    already moved away from `bad_version`. Returns where the alias points afterwards."""
    holder = client.get_registered_model(name).aliases.get(alias)
    if holder is None or str(holder) != str(bad_version):
        return None if holder is None else str(holder)
    if previous and previous != str(bad_version) and state_of(client, name, previous) == SUCCESS:
        client.set_registered_model_alias(name, alias, previous)
        return previous
    client.delete_registered_model_alias(name, alias)
    return None
