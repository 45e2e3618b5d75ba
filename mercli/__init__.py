"""mer: end-to-end multimodal emotion analysis of video."""

from mercli.features.heap import bound_onednn_cache

__version__ = "0.1.0"

bound_onednn_cache()  # before torch compiles its first convolution (see features/heap.py)
