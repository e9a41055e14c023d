"""covr model folders: a retriever saved for offline use and sharing.

    <folder>/config.json        {"covr_format", "covr_version", family, spec, query_head, xaligner, ...}
    <folder>/model.safetensors  the retriever's state dict (backbone.*, xaligner.*)
    <folder>/tokenizer files    written by the tokenizer's save_pretrained
    <folder>/README.md          model card (where the weights came from; see covr-convert-checkpoint)

Writes and reads plain data only: building the retriever a folder describes is covr.models.build's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import Tensor

from covr.models.checkpoint_io import CheckpointError
from covr.models.formats import FOLDER_KEY, read_weights_file
from covr.models.heads import default_stage
from covr.models.retriever import ComposedRetriever
from covr.version import __version__

FORMAT = "covr.model_folder/1"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"


def folder_config(model: ComposedRetriever) -> dict[str, Any]:
    """What rebuilds the retriever without weights: its architecture, head and training stage."""
    return {FOLDER_KEY: FORMAT, "covr_version": __version__, **model.describe(), "stage": model.stage, "query_frames": model.query_frames}


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
    umask = os.umask(0o022)
    os.umask(umask)
    os.chmod(out / WEIGHTS_NAME, 0o666 & ~umask)  # safetensors writes it owner-only (0o600); the folder's other files follow the umask
    (out / CONFIG_NAME).write_text(json.dumps(folder_config(model), indent=2, sort_keys=True, default=str) + "\n")
    if card is not None:
        (out / CARD_NAME).write_text(card)
    return out


def read_model_folder(path: str | Path) -> tuple[dict[str, Any], dict[str, Tensor], str]:
    """A covr model folder's contents: (retriever config for covr.models.build_retriever, with a
    weightless backbone and the folder's tokenizer; state dict; weights file name for messages)."""
    path = Path(path)
    try:
        config = json.loads((path / CONFIG_NAME).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a covr model folder ({CONFIG_NAME}: {err}); expected one written by covr-convert-checkpoint") from None
    if config.get(FOLDER_KEY) != FORMAT:
        raise CheckpointError(f"{path / CONFIG_NAME}: format {config.get(FOLDER_KEY)!r} is not {FORMAT!r} (written by a newer covr?)")
    cfg = {
        "backbone": {"family": config["family"], "weights": None, "spec": config["spec"], "tokenizer": str(path)},
        "query_head": config["query_head"],
        "xaligner": config.get("xaligner"),
        "reference_frames": config["reference_frames"],
        "max_text_length": config["max_text_length"],
        "stage": config.get("stage", default_stage(config["query_head"])),
        "query_frames": config.get("query_frames"),
        "uncertainty": config.get("uncertainty"),  # HUG's uncertainty heads, when the model has them
    }
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{path} has no {WEIGHTS_NAME}; expected a complete covr model folder")
    return cfg, read_weights_file(weights), str(weights)
