"""archlab architectures: one module per family, each architecture registered by name.

Importing this package registers every architecture; `models.registry` looks them up.
"""

from models import autoencoder, cnn, esn, mlp, recurrent, seq2seq  # noqa: F401  (registration side effect)
from models.registry import build, get, names, register

__all__ = ["build", "get", "names", "register"]
