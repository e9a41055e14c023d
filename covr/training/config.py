"""OmegaConf resolvers the configs use, and conversion of config nodes to plain containers."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


def _toy_vocabulary() -> list[str]:
    from covr.data.toy import toy_vocabulary

    return toy_vocabulary()


def _required(what: str) -> None:
    raise ValueError(f"missing a required value: {what}")


def register_resolvers() -> None:
    """`${toy_vocabulary:}` (the toy data's word list), `${toy_vocabulary_size:N}` (its size + N) and
    `${required:'what to pass'}` (fails with that message unless the key is set on the command line;
    OmegaConf's ??? cannot be used in experiment files, whose ??? never overrides a default)."""
    if not OmegaConf.has_resolver("required"):
        OmegaConf.register_new_resolver("required", _required)
    if not OmegaConf.has_resolver("toy_vocabulary"):
        OmegaConf.register_new_resolver("toy_vocabulary", _toy_vocabulary)
        OmegaConf.register_new_resolver("toy_vocabulary_size", lambda extra=0: len(_toy_vocabulary()) + int(extra))


def plain(node: Any) -> Any:
    """A resolved plain dict / list from a config node (model and data code never see OmegaConf)."""
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
    return node


register_resolvers()
