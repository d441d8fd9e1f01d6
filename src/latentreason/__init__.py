"""latentreason: efficient reasoning in language models.

One package for chain-of-thought baselines and latent-reasoning methods (iCoT, Coconut, CODI,
System-1.5, Soft Thinking), with a shared data layer, trainer, latent decoding engine and benchmark.
"""

__version__ = "0.1.0"

from latentreason.errors import LatentReasonError  # noqa: E402

__all__ = ["LatentReasonError", "__version__"]
