"""The IAMD + MIC + SGAFF emotion model."""

from mercli.model.emotion import EmotionModel, ModelOutput

__all__ = ["EmotionModel", "ModelOutput"]
