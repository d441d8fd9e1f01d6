"""Methods: one file per method, each a ``Method`` subclass registered by name."""

from latentreason.methods.adaptive import CODIAdaptive
from latentreason.methods.base import METHODS, Generation, Method, MethodConfig, method_config
from latentreason.methods.coconut import Coconut
from latentreason.methods.codi import CODI
from latentreason.methods.cot import CoT
from latentreason.methods.icot import ICoT
from latentreason.methods.nocot import NoCoT
from latentreason.methods.registry import get_method_class
from latentreason.methods.system15 import System15

__all__ = ["CODI", "CODIAdaptive", "Coconut", "ICoT", "METHODS", "CoT", "Generation", "Method", "MethodConfig", "NoCoT", "System15", "get_method_class", "method_config"]
