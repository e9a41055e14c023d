"""Shared test setup: offline hub, tiny model configs, the reference fixtures."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models: one intra-op thread is several times faster than two competing ones on a 2-core
# machine; subprocesses started by the tests inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures"

TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + (
    "a an the make it red blue green circle square triangle move left right up down to and with "
    "of is on background black white change replace turn bigger smaller video man dog"
).split()

_TINY_LAYERS = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}  # every tiny transformer
_TINY_VIT = {**_TINY_LAYERS, "image_size": 32, "patch_size": 8}

TINY_SPEC = {
    "vision_config": dict(_TINY_VIT),
    "qformer_config": {**_TINY_LAYERS, "vocab_size": len(TINY_VOCAB) + 1, "max_position_embeddings": 64, "cross_attention_frequency": 1},
    "num_query_tokens": 4,
    "image_text_hidden_size": 16,
}


TINY_BLIP_SPEC = {
    "vision_config": {**_TINY_VIT, "layer_norm_eps": 1e-6},
    "text_config": {**_TINY_LAYERS, "vocab_size": len(TINY_VOCAB) + 2, "max_position_embeddings": 64},  # + [DEC] + [ENC]
    "image_text_hidden_size": 16,
}


def tiny_model_config(family: str = "blip2", **overrides) -> dict:
    """A complete retriever config (covr.models.build_retriever format) with tiny sizes."""
    spec = TINY_SPEC if family == "blip2" else TINY_BLIP_SPEC
    cfg = {
        "backbone": {"family": family, "weights": None, "spec": copy.deepcopy(spec), "tokenizer": list(TINY_VOCAB), "seed": 0},
        "query_head": "xaligner",
        "xaligner": {"num_blocks": 2, "num_heads": 2, "max_frames": 8},
        "reference_frames": "middle",
        "max_text_length": 16,
        "stage": 1,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    return cfg


EDITS = ["make it red", "move it to the left", "change the background to white", "replace the circle with a square"]
CAPTIONS = ["a blue circle", "", "a square on a black background", ""]  # two samples without a caption


def query_frames(b: int = 4, f: int = 4, seed: int = 0) -> torch.Tensor:
    """Random reference clips `[b, f, 3, 32, 32]` for the tiny models."""
    return torch.randn(b, f, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def assert_padded_batch_equals_samples_alone(model, mask: torch.Tensor) -> None:
    """Clips padded to one length (`frame_mask`) and mixed captions in one batch: each sample's query
    equals the one it gets encoded alone with only its own frames."""
    frames = query_frames()
    with torch.no_grad():
        batch = model.encode_query(frames, EDITS, CAPTIONS, frame_mask=mask)
        for i in range(len(EDITS)):
            n = int(mask[i].sum())
            alone = model.encode_query(frames[i : i + 1, :n], EDITS[i : i + 1], CAPTIONS[i : i + 1])
            torch.testing.assert_close(batch[i : i + 1], alone, atol=2e-6, rtol=0)


def open_xaligner(model, gate: float = 0.5, seed: int = 0):
    """Put every X-Aligner weight on the gradient path, as training soon does: gates set to `gate`
    (residual="gate"), or the zero-initialised last layer of each branch drawn from N(0, 0.02^2)
    (residual="output"). Returns the model."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in model.xaligner.blocks:
            if block.gates is not None:
                for value in block.gates.values():
                    value.fill_(gate)
            else:
                for layer in block.output_layers().values():
                    layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.02)
    return model


def _fixture(name: str) -> Path:
    path = FIXTURES / name
    if not path.is_file():
        if os.environ.get("COVR_REQUIRE_FIXTURES"):
            pytest.fail(f"reference fixture {path} not found")
        pytest.skip(f"reference fixture {path} not found (../shared is not beside the checkout)")
    return path


@pytest.fixture(scope="session")
def blip2_fixture_path() -> Path:
    return _fixture("lavis_blip2_tiny.pt")


@pytest.fixture(scope="session")
def blip_fixture_path() -> Path:
    return _fixture("lavis_blip_tiny.pt")
