"""Models: backbones (BLIP-2, BLIP), X-Aligner, the composed retriever, their factories and the
one loader for every weights format (`load_model`)."""

from covr.models.build import build_backbone, build_retriever, checkpoint_payload, load_retriever
from covr.models.loading import load_model
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
    "load_model",
    "load_retriever",
    "similarity",
]
