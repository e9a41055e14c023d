"""Models: backbones (BLIP-2, BLIP), X-Aligner, the composed retriever, their factories and the
one loader for every weights format (`load_model`). The layering is described in loading.py.
Similarity is covr.similarity (plain torch, so data and evaluation code need not import models)."""

from covr.models.build import backbone_from_weights, build_backbone, build_retriever, load_retriever
from covr.models.covr_checkpoint import checkpoint_payload
from covr.models.loading import load_model
from covr.models.retriever import ComposedRetriever
from covr.models.xaligner import XAligner, XAlignerConfig

__all__ = [
    "ComposedRetriever",
    "XAligner",
    "XAlignerConfig",
    "backbone_from_weights",
    "build_backbone",
    "build_retriever",
    "checkpoint_payload",
    "load_model",
    "load_retriever",
]
