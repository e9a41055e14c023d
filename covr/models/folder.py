"""covr model folders: a retriever saved for offline use and sharing.

    <folder>/config.json        {"covr_format", "covr_version", family, spec, query_head, xaligner, ...}
    <folder>/model.safetensors  the retriever's state dict (backbone.*, xaligner.*)
    <folder>/tokenizer files    written by the tokenizer's save_pretrained
    <folder>/README.md          model card (where the weights came from; see tools/convert_checkpoint.py)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import Tensor

import covr
from covr.models.build import build_retriever, load_covr_weights
from covr.models.checkpoint_io import CheckpointError
from covr.models.formats import FOLDER_KEY
from covr.models.retriever import ComposedRetriever

FORMAT = "covr.model_folder/1"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"


def folder_config(model: ComposedRetriever) -> dict[str, Any]:
    """What rebuilds the retriever without weights: its architecture, head and training stage."""
    return {FOLDER_KEY: FORMAT, "covr_version": covr.__version__, **model.describe(), "stage": model.stage, "query_frames": model.query_frames}


def _safetensors_state(model: ComposedRetriever) -> dict[str, Tensor]:
    """Contiguous CPU tensors, cloned where two names share storage (safetensors refuses that)."""
    state, seen = {}, set()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        state[name] = t.clone() if key in seen else t
        seen.add(key)
    return state


def save_model_folder(model: ComposedRetriever, out: str | Path, card: str | None = None) -> Path:
    """Write config.json, model.safetensors, the tokenizer and (if given) the model card to `out`."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.backbone.tokenizer.save_pretrained(str(out))
    save_file(_safetensors_state(model), str(out / WEIGHTS_NAME), metadata={"format": "pt", "covr_format": FORMAT})
    (out / CONFIG_NAME).write_text(json.dumps(folder_config(model), indent=2, sort_keys=True, default=str) + "\n")
    if card is not None:
        (out / CARD_NAME).write_text(card)
    return out


def load_model_folder(path: str | Path, strict: bool = True) -> ComposedRetriever:
    """Rebuild a retriever from a covr model folder, offline (eval mode)."""
    from safetensors.torch import load_file

    path = Path(path)
    try:
        config = json.loads((path / CONFIG_NAME).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a covr model folder ({CONFIG_NAME}: {err}); expected one written by tools/convert_checkpoint.py") from None
    if config.get(FOLDER_KEY) != FORMAT:
        raise CheckpointError(f"{path / CONFIG_NAME}: format {config.get(FOLDER_KEY)!r} is not {FORMAT!r} (written by a newer covr?)")
    cfg = {
        "backbone": {"family": config["family"], "weights": None, "spec": config["spec"], "tokenizer": str(path)},
        "query_head": config["query_head"],
        "xaligner": config.get("xaligner"),
        "reference_frames": config["reference_frames"],
        "max_text_length": config["max_text_length"],
        "stage": config.get("stage", 2 if config["query_head"] == "covr2" else 1),
        "query_frames": config.get("query_frames"),
    }
    model = build_retriever(cfg)
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{path} has no {WEIGHTS_NAME}; expected a complete covr model folder")
    try:
        state = load_file(str(weights))
    except Exception as err:  # noqa: BLE001 - header / length errors of a cut file
        raise CheckpointError(f"{weights} is not a readable safetensors file (truncated or corrupt?): {str(err).splitlines()[0][:200]}") from None
    load_covr_weights(model, state, str(weights), strict)
    return model.eval()
