"""User-facing errors.

Every error a user can cause (bad data, bad config, bad checkpoint, an unusable output
location, a diverging run) is a subclass of :class:`LatentReasonError`; the CLI prints its
message on one line and exits non-zero (2; 130 for an interrupted run). Messages say what went
wrong and where: a file and line, a config field, a checkpoint directory.
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


class ContextOverflowError(DataError):
    """A question (with what the method must place before its answer) does not fit the model's context.

    ``index`` is the question's position in the batch, ``needed`` the positions it needs and
    ``limit`` the model's context."""

    def __init__(self, message: str, index: int | None = None, needed: int | None = None, limit: int | None = None):
        super().__init__(message)
        self.index, self.needed, self.limit = index, needed, limit


class DependencyError(LatentReasonError):
    """An installed library is outside the supported range (the message names the range)."""


class OutputError(LatentReasonError):
    """An output location that cannot be written (the message names the path)."""


class TrainingError(LatentReasonError):
    """Training cannot continue (e.g. a non-finite loss)."""


class NonFiniteLossError(TrainingError):
    """The loss (or the gradient norm) became NaN or infinite; the weights were not updated with it."""


class TrainingInterrupted(TrainingError):
    """Training was stopped by SIGINT / SIGTERM; a checkpoint of the last finished step was saved.

    ``signum`` is the signal (the CLI exits with 128 + signum: 130 for Ctrl-C, 143 for SIGTERM).
    """

    def __init__(self, message: str, signum: int = 2):
        super().__init__(message)
        self.signum = signum
