"""Methods: one file per method, each a ``Method`` subclass registered by name."""

from latentreason.methods.base import METHODS, Generation, Method, MethodConfig, get_method_class, method_config
from latentreason.methods.cot import CoT
from latentreason.methods.nocot import NoCoT

__all__ = ["METHODS", "CoT", "Generation", "Method", "MethodConfig", "NoCoT", "get_method_class", "method_config"]
