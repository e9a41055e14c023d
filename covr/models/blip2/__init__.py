"""The BLIP-2 family (CoVR-2, X-Aligner): the backbone (model.py), LAVIS key conversion
(lavis_keys.py) and its builders (builders.py), described to the generic loaders by `FAMILY`."""

from covr.models.backbone import Family
from covr.models.blip2.builders import from_pretrained, from_state
from covr.models.blip2.lavis_keys import key_layout
from covr.models.blip2.model import Blip2Backbone, build_blip2_random, make_blip2_config

FAMILY = Family(
    name="blip2",
    display_name="BLIP-2",
    model_type="blip-2",
    max_text_length=32,  # CoVR-2's training length
    backbone=Blip2Backbone,
    random=build_blip2_random,
    from_pretrained=from_pretrained,
    from_state=from_state,
    key_layout=key_layout,
)

__all__ = ["FAMILY", "Blip2Backbone", "build_blip2_random", "make_blip2_config"]
