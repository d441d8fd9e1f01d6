"""Data: one :class:`Example` type, loaders per format, the procedural default task, answers."""

from latentreason.data.answers import extract_span, is_correct, judge, parse_number
from latentreason.data.example import Example
from latentreason.data.loaders import FORMATS, detect_format, load_file
from latentreason.data.procedural import TaskConfig, generate_splits
from latentreason.data.registry import NAMED, dataset_names, load_dataset

__all__ = [
    "Example",
    "FORMATS",
    "NAMED",
    "TaskConfig",
    "dataset_names",
    "detect_format",
    "extract_span",
    "generate_splits",
    "is_correct",
    "judge",
    "load_dataset",
    "load_file",
    "parse_number",
]
