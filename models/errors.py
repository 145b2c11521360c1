"""The one exception type the trainer shows to users as a plain message (no traceback)."""
from __future__ import annotations


class TrainError(Exception):
    """A problem with the user's input (data, spec, options) or an artifact.

    The CLI prints ``malsensor-train: <message>`` and exits with status 2.
    """
