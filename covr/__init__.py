"""covr: composed video retrieval (X-Aligner on BLIP-2 / BLIP, CoVR-2 baseline).

`covr.load(path_or_hub_id)` returns a ready-to-search retriever (see covr.api)."""

from __future__ import annotations

from typing import Any

from covr.version import __version__

__all__ = ["__version__", "load"]


def load(source: Any, device: Any = None, trust_checkpoint: bool = False, **options: Any) -> Any:
    """Load a retriever from a covr model folder or checkpoint, a transformers folder or hub id, or a
    LAVIS / CoVR / CoVR-2 file; returns a `covr.api.Retriever` (imported lazily: `import covr` stays cheap).
    Files are read weights-only; `trust_checkpoint=True` allows full unpickling (runs code from the file)."""
    from covr.api import load as _load

    return _load(source, device, trust_checkpoint=trust_checkpoint, **options)
