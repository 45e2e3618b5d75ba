"""Raw media to model inputs: decoding, transcription and per-modality features."""
