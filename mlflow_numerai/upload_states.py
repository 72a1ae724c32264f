"""Old home of the upload states, kept while tests outside the registry import it: see `registry.states`."""

from mlflow_numerai.registry.states import *  # noqa: F403  (every public name: states, reasons, the machine)
