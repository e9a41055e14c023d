"""What a weights source is: reading a file or folder and recognising its format and backbone family.
Reads and recognises only: building a model from a `Source` is covr.models.build's.

Formats (detected from content, never from the file name alone):
  covr model folder       config.json with "covr_format" + model.safetensors (covr-convert-checkpoint)
  covr checkpoint         Lightning .ckpt with a top-level "covr" entry (config + vocabulary)
  transformers            a save_pretrained folder or hub id; family from config.json's model_type
  state dict              LAVIS BLIP-2 / BLIP .pth ({"model": ...}), CoVR / CoVR-2 .ckpt ("model" or
                          "state_dict", keys maybe prefixed "model." / "module."), bare state dicts in
                          LAVIS or transformers names, `.safetensors` files, covr retriever state dicts
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from covr.models.checkpoint_io import CheckpointError, UntrustedCheckpointError, read_checkpoint, strip_prefix
from covr.models.families import FAMILIES

EXPECTED = (
    "expected a covr model folder or checkpoint, a transformers BLIP / BLIP-2 folder or hub id, a LAVIS BLIP / "
    "BLIP-2 .pth, a CoVR / CoVR-2 .ckpt, or a state dict in one of their key layouts"
)
FAMILY_NAMES = {name: family.display_name for name, family in FAMILIES.items()}  # "blip2" -> "BLIP-2"
MODEL_TYPES = {family.model_type: name for name, family in FAMILIES.items()}  # transformers config.json model_type -> family
FOLDER_KEY = "covr_format"  # marks a covr model folder's config.json
_FILE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")
_WRAPPERS = ("model", "state_dict", "module")


@dataclass
class Source:
    """A recognised weights source.

    kind: "covr_folder" | "covr_checkpoint" | "transformers" | "state_dict"
    layout: what the keys look like, for messages ("LAVIS BLIP", "transformers BLIP-2", "covr retriever", ...)
    """

    location: str
    kind: str
    family: str | None
    layout: str = ""
    obj: Any = None  # the loaded checkpoint (covr_checkpoint)
    state: dict[str, Tensor] = field(default_factory=dict)  # the weights (state_dict)

    def describe(self) -> str:
        name = {"covr_folder": "covr model folder", "covr_checkpoint": "covr checkpoint", "transformers": "transformers model"}
        return f"{self.layout} state dict" if self.kind == "state_dict" else f"{name[self.kind]} ({FAMILY_NAMES.get(self.family, '?')})"


def looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or source.endswith(_FILE_SUFFIXES)


def inspect_source(source: str | Path) -> Source:
    """Recognise `source` (file, folder or hub id). Fails with a one-line CheckpointError naming what
    was expected when it is missing, unreadable, truncated or of an unknown format."""
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        return _inspect_folder(path)
    if path.is_file():
        return inspect_object(read_weights_file(path), text)
    if looks_like_path(text):
        raise CheckpointError(f"weights file {text} does not exist; {EXPECTED}")
    return _inspect_hub(text)


def _inspect_folder(path: Path) -> Source:
    config_path = path / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"folder {path} has no config.json; expected a covr model folder (covr-convert-checkpoint) or a transformers save_pretrained folder")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{config_path} is not readable JSON ({err}); expected a covr or transformers config.json") from None
    if FOLDER_KEY in config:
        return Source(str(path), "covr_folder", config.get("family"), "covr model folder")
    return Source(str(path), "transformers", _family_of_model_type(config.get("model_type"), str(path)), "transformers")


def _inspect_hub(name: str) -> Source:
    from transformers import PretrainedConfig

    try:
        config, _ = PretrainedConfig.get_config_dict(name)
    except Exception as err:  # noqa: BLE001 - OSError offline, HTTP errors, bad repo names
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise CheckpointError(f"{name} is not a local file or folder, and as a hub id it could not be read ({first}); {EXPECTED}") from None
    return Source(name, "transformers", _family_of_model_type(config.get("model_type"), name), "transformers")


def _family_of_model_type(model_type: str | None, where: str) -> str:
    if model_type not in MODEL_TYPES:
        raise CheckpointError(f"{where}: config.json model_type {model_type!r} is not BLIP ('blip') or BLIP-2 ('blip-2'); {EXPECTED}")
    return MODEL_TYPES[model_type]


def read_weights_file(path: Path) -> Any:
    """torch.load (weights only where possible) or safetensors, by content; one-line errors."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # noqa: BLE001 - header / length errors of a cut file
            raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt?): {str(err).splitlines()[0][:200]}") from None
    try:
        return read_checkpoint(path)
    except UntrustedCheckpointError:
        raise  # a readable file that needs the opt-in: its format is not the problem
    except CheckpointError as err:
        raise CheckpointError(f"{err}; {EXPECTED}") from None


def inspect_object(obj: Any, location: str) -> Source:
    """Recognise an already-loaded checkpoint object."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{location} holds a {type(obj).__name__}, not a dict: unknown checkpoint format; {EXPECTED}")
    if "covr" in obj and "state_dict" in obj:
        return Source(location, "covr_checkpoint", obj["covr"].get("family"), "covr checkpoint", obj=obj)
    state = unwrap_state(obj)
    family, layout = family_of_state(state)
    if family is None:
        keys = ", ".join(sorted(map(str, obj))[:8])
        raise CheckpointError(f"{location}: unknown checkpoint format (top-level keys: {keys}); {EXPECTED}")
    return Source(location, "state_dict", family, layout, state=state)


def unwrap_state(obj: Mapping[str, Any]) -> dict[str, Tensor]:
    """The tensors of a checkpoint: under "model" / "state_dict" / "module" or at the top level,
    without DDP's "module." prefix, and without a Lightning "model." prefix when the rest is not weights."""
    inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), Mapping)), obj)
    state = strip_prefix({k: v for k, v in inner.items() if isinstance(v, Tensor)}, "module.")
    prefixed = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    if prefixed and family_of_state(state)[0] is None and family_of_state(prefixed)[0] is not None:
        return prefixed
    return state


def family_of_state(state: Mapping[str, Any]) -> tuple[str | None, str]:
    """(family, key layout) from key names; (None, "") when they match no known layout. A covr
    retriever state dict (`backbone.*`, `xaligner.*`) has layout "covr retriever"."""
    keys = set(state)
    if any(k.startswith("backbone.") for k in keys):
        family, _ = family_of_state(dict.fromkeys(k[len("backbone."):] for k in keys if k.startswith("backbone.")))
        return family, "covr retriever"
    for name, family in FAMILIES.items():
        layout = family.key_layout(keys)
        if layout is not None:
            return name, layout
    return None, ""


def check_family(source: Source, wanted: str | None) -> None:
    """A checkpoint of the other backbone family fails here, in one line, saying what was expected."""
    if wanted is None or source.family == wanted:
        return
    got = FAMILY_NAMES.get(source.family, str(source.family))
    want = FAMILY_NAMES.get(wanted, wanted)
    raise CheckpointError(
        f"{source.location} is a {source.describe()}, but the backbone config asks for family {wanted!r}; expected {want} "
        f"weights (or use family: {source.family}, i.e. model={source.family}, for these {got} weights)"
    )
