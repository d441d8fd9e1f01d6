"""Method names to classes: every method of the package, by the name configs and the CLI use."""

from __future__ import annotations

from latentreason.errors import ConfigError
from latentreason.methods.adaptive.method import CODIAdaptive
from latentreason.methods.base import Method
from latentreason.methods.coconut import Coconut
from latentreason.methods.codi import CODI
from latentreason.methods.cot import CoT
from latentreason.methods.icot import ICoT
from latentreason.methods.nocot import NoCoT
from latentreason.methods.system15.method import System15

#: every method class by name
METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (CoT, NoCoT, ICoT, Coconut, CODI, System15, CODIAdaptive)}


def get_method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise ConfigError(f"method: unknown method {name!r}; valid methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]
