"""Models: backbones (BLIP-2), X-Aligner, the composed retriever and their factories."""

from covr.models.build import build_backbone, build_retriever, checkpoint_payload, load_retriever
from covr.models.retriever import ComposedRetriever
from covr.models.similarity import similarity
from covr.models.xaligner import XAligner, XAlignerConfig

__all__ = [
    "ComposedRetriever",
    "XAligner",
    "XAlignerConfig",
    "build_backbone",
    "build_retriever",
    "checkpoint_payload",
    "load_retriever",
    "similarity",
]
