"""archlab architectures: one module per family, each architecture registered by name.

`models.get(name)` imports the family module that registers `name` (see
`models.registry.FAMILIES`) and returns its `Architecture`; nothing is imported eagerly.
"""

from models.registry import build, get, names, precision, register

__all__ = ["build", "get", "names", "precision", "register"]
