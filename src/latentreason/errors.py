"""User-facing errors.

Every error a user can cause (bad data, bad config, bad checkpoint) is a subclass of
:class:`LatentReasonError`; the CLI prints its message on one line and exits non-zero.
"""

from __future__ import annotations


class LatentReasonError(Exception):
    """An error caused by the user's input; its message says what and where."""


class DataError(LatentReasonError):
    """Malformed or missing data (the message names the file and line)."""


class ConfigError(LatentReasonError):
    """An invalid configuration (the message names the field)."""


class CheckpointError(LatentReasonError):
    """A checkpoint that cannot be loaded as requested."""


class TrainingError(LatentReasonError):
    """Training cannot continue (e.g. a non-finite loss)."""
