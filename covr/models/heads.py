"""Query heads, named for what they compute, and the former names older files still carry.

  "joint"     the backbone's own composed query: one joint pass of the reference frame and the edit
              (BLIP-2: the Q-Former's queries + text, CoVR-2's query; BLIP: the image-grounded text
              encoder's [ENC] state, CoVR's query), text_proj, per-token normalise. No X-Aligner.
  "xaligner"  X-Aligner on top of the joint query's hidden states.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

QUERY_HEADS = ("joint", "xaligner")
# Former head names, still read from older checkpoints, model folders and configs. "covr2" named the
# joint query after CoVR-2, although on a BLIP backbone it is CoVR-1's query.
RENAMED_QUERY_HEADS = {"covr2": "joint"}


def canonical_query_head(name: str) -> str:
    """The current name of a query head: a former name is mapped (with a logged note); an unknown
    one is a one-line error naming the choices."""
    if name in RENAMED_QUERY_HEADS:
        log.info("query_head %r is now called %r (same computation)", name, RENAMED_QUERY_HEADS[name])
        return RENAMED_QUERY_HEADS[name]
    if name not in QUERY_HEADS:
        raise ValueError(f"query_head {name!r} is not one of {', '.join(QUERY_HEADS)}")
    return name


def default_stage(query_head: str) -> int:
    """The stage a model without a recorded one is in: the joint head has nothing of its own to train
    in stage 1, so its weights are a stage-2 (text encoder) result; X-Aligner's are stage 1's."""
    return 2 if RENAMED_QUERY_HEADS.get(query_head, query_head) == "joint" else 1
