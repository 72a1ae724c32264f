"""The error every bad input raises, whatever the layer.

Domain code raises `InputError` (or a subclass) with a message that names what is wrong; the
command line (`mlflow_numerai.cli`) turns it into one line and exit status 2. Imports nothing of
the package.
"""

from __future__ import annotations


class InputError(ValueError):
    """A bad input: a missing or unreadable file, a wrong column, a wrong value, a bad request."""
