"""dense_jax: dense self-supervised learning of Vision Transformers in JAX/Flax."""

from dense_jax import models

__all__ = ["models"]
__version__ = "0.1.0"
