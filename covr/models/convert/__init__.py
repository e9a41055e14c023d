"""Checkpoint key conversion from other codebases (LAVIS, CoVR) to covr / transformers names."""
