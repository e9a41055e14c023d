"""The BLIP (v1) family (CoVR): the backbone (model.py), LAVIS / CoVR key conversion
(lavis_keys.py) and its builders (builders.py), described to the generic loaders by `FAMILY`."""

from covr.models.backbone import Family
from covr.models.blip.builders import from_pretrained, from_state
from covr.models.blip.lavis_keys import key_layout
from covr.models.blip.model import BlipBackbone, build_blip_random, make_blip_config

FAMILY = Family(
    name="blip",
    display_name="BLIP",
    model_type="blip",
    max_text_length=35,  # CoVR's training length
    backbone=BlipBackbone,
    random=build_blip_random,
    from_pretrained=from_pretrained,
    from_state=from_state,
    key_layout=key_layout,
)

__all__ = ["FAMILY", "BlipBackbone", "build_blip_random", "make_blip_config"]
