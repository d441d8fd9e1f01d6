"""Method names to classes: every method module imported, so that each has registered its class.

A method module registers its class in :data:`~latentreason.methods.base.METHODS` with
:func:`~latentreason.methods.base.register` when it is imported; this module imports them all,
so :func:`get_method_class` knows every method whichever module asks first.
"""

from __future__ import annotations

from latentreason.errors import ConfigError
from latentreason.methods.adaptive import CODIAdaptive  # noqa: F401  (registers the method)
from latentreason.methods.base import METHODS, Method
from latentreason.methods.coconut import Coconut  # noqa: F401
from latentreason.methods.codi import CODI  # noqa: F401
from latentreason.methods.cot import CoT  # noqa: F401
from latentreason.methods.icot import ICoT  # noqa: F401
from latentreason.methods.nocot import NoCoT  # noqa: F401
from latentreason.methods.system15 import System15  # noqa: F401


def get_method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise ConfigError(f"method: unknown method {name!r}; valid methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


__all__ = ["METHODS", "get_method_class"]
