"""The one registry of backbone families: the generic layers (formats, factories, `load_model`)
reach a family only through this dict, never by importing it. Adding a family = a package like
covr/models/blip2/ and one entry here."""

from __future__ import annotations

from covr.models import blip, blip2
from covr.models.backbone import Family

# Order matters where key layouts are tried: the first family that recognises a state dict wins.
FAMILIES: dict[str, Family] = {family.name: family for family in (blip2.FAMILY, blip.FAMILY)}


def get_family(name: str | None) -> Family:
    """The family called `name`; a one-line error naming the known ones otherwise."""
    if name not in FAMILIES:
        raise ValueError(f"unknown backbone family {name!r}; expected one of {', '.join(FAMILIES)}")
    return FAMILIES[name]
