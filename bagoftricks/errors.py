"""The mistakes a user can make and fix: a config value, a file, a dataset.

The CLI and ``bagoftricks ablate`` print exactly these as one line, ``bagoftricks: error: ...``;
every other exception (a bug in a user's callback, a torch shape error) keeps its traceback.
Pure functions in ``tricks`` and ``models`` raise ordinary ``ValueError``s in their own terms;
the module, the data modules and the ablation spec translate them at the boundary, once, at
start-up, into these errors phrased with the config key.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in what the user gave us; the message says what is wrong and how to fix it."""


class ConfigError(UserError, ValueError):
    """An impossible config value or CLI key (``model.label_smoothing 1.5``)."""


class DataError(UserError, RuntimeError):
    """A dataset, image, archive or weights file that is missing, corrupt or not the expected one."""


class MissingDataError(DataError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class TrainingDivergedError(UserError, FloatingPointError):
    """The training loss became NaN or infinite; the message names the step and the usual causes."""
