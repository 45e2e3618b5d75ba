"""mer: end-to-end multimodal emotion analysis of video."""

__version__ = "0.1.0"
