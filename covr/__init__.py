"""covr: composed video retrieval (X-Aligner on BLIP-2 / BLIP, CoVR-2 baseline)."""

__version__ = "0.1.0"
