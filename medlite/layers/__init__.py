"""Building blocks shared by medlite models.

Patch embedding is timm's ``PatchEmbed`` (a strided convolution), re-exported here; it fits MedLiT as is.
"""

from timm.layers import PatchEmbed

from medlite.layers.attention import GQAttention
from medlite.layers.mlp import SwiGLU
from medlite.layers.moe import MoESwiGLU, cv_squared

__all__ = ["GQAttention", "MoESwiGLU", "PatchEmbed", "SwiGLU", "cv_squared"]
