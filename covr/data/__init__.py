"""Data: WebVid-CoVR readers, video decoding, transforms, embedding store, toy data.

Import what you need from the submodules; the names below are the public surface.
"""

from covr.data.annotations import CovrAnnotations, parse_scores, read_webvid_covr_csv
from covr.data.collate import EpochSampler, collate_covr, pad_frames
from covr.data.embedding_store import EmbeddingStore
from covr.data.errors import AnnotationError, CovrDataError, EmbeddingStoreError, MissingVideosError, VideoDecodeError
from covr.data.shared_slots import SlotDataLoader
from covr.data.text import clean_text
from covr.data.transforms import TestTransform, TrainTransform, build_transform, to_model_input
from covr.data.video import load_frames, sample_indices
from covr.data.webvid_covr import WebVidCoVRDataset

__all__ = [
    "AnnotationError",
    "CovrAnnotations",
    "CovrDataError",
    "EmbeddingStore",
    "EmbeddingStoreError",
    "EpochSampler",
    "MissingVideosError",
    "SlotDataLoader",
    "TestTransform",
    "TrainTransform",
    "VideoDecodeError",
    "WebVidCoVRDataset",
    "build_transform",
    "clean_text",
    "collate_covr",
    "load_frames",
    "pad_frames",
    "parse_scores",
    "read_webvid_covr_csv",
    "sample_indices",
    "to_model_input",
]
