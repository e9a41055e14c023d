"""Composed retriever: query/target encoding shapes, X-Aligner starting exactly at CoVR-2,
multi-frame and caption handling, similarity modes."""

from __future__ import annotations

import pytest
import torch

from conftest import CAPTIONS, EDITS, assert_padded_batch_equals_samples_alone, open_xaligner, tiny_model_config
from conftest import query_frames as _frames
from covr.models import build_retriever
from covr.similarity import similarity

def _with_open_gates(model):
    return open_xaligner(model)  # every X-Aligner weight on the path (branches start at exactly zero)


def _copy_backbone(src, dst):
    missing, unexpected = dst.load_state_dict(src.state_dict(), strict=False)
    assert not unexpected or all(k.startswith("xaligner") for k in unexpected)


@pytest.mark.parametrize("num_frames", [1, 4])
def test_xaligner_at_init_equals_the_joint_query(num_frames):
    xal = build_retriever(tiny_model_config()).eval()
    joint = build_retriever(tiny_model_config(query_head="joint", stage=2)).eval()
    _copy_backbone(xal, joint)
    frames = _frames(f=num_frames)
    with torch.no_grad():
        q_x = xal.encode_query(frames, EDITS, CAPTIONS)
        q_c = joint.encode_query(frames, EDITS, CAPTIONS)
        middle = joint.encode_query(frames[:, num_frames // 2], EDITS)  # single middle frame, CoVR style
    assert q_x.shape == (4, 4, 16)
    torch.testing.assert_close(q_x, q_c, atol=0, rtol=0)
    torch.testing.assert_close(q_c, middle, atol=1e-6, rtol=0)
    torch.testing.assert_close(q_x.norm(dim=-1), torch.ones(4, 4))


def test_joint_query_is_the_backbone_composed_query():
    model = build_retriever(tiny_model_config(query_head="joint", stage=2)).eval()
    frames = _frames(f=1)[:, 0]
    b = model.backbone
    with torch.no_grad():
        expected = b.project_query(b.joint_hidden(b.vision_tokens(frames), model.tokenize(EDITS)))
        assert torch.equal(model.encode_query(frames, EDITS), expected)


def test_one_and_four_frames_with_and_without_captions_in_one_batch():
    """Mixed clip lengths (padded + frame_mask) and mixed captions: each sample's query equals the
    query it gets when encoded alone with only its own frames."""
    model = _with_open_gates(build_retriever(tiny_model_config())).eval()
    assert_padded_batch_equals_samples_alone(model, torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool))


def test_missing_caption_means_no_caption_update():
    with_caption = _with_open_gates(build_retriever(tiny_model_config())).eval()
    without = _with_open_gates(build_retriever(tiny_model_config(xaligner={"use_caption": False}))).eval()
    state = {k: v for k, v in with_caption.state_dict().items() if ".cross.caption." not in k and not k.endswith("caption") and "memory_norms.caption" not in k}
    without.load_state_dict(state, strict=True)
    frames = _frames()
    with torch.no_grad():
        a = with_caption.encode_query(frames, EDITS, CAPTIONS)
        b = without.encode_query(frames, EDITS, None)
    empty = [i for i, c in enumerate(CAPTIONS) if not c]
    full = [i for i, c in enumerate(CAPTIONS) if c]
    torch.testing.assert_close(a[empty], b[empty], atol=1e-6, rtol=0)
    assert (a[full] - b[full]).abs().max() > 1e-3  # the caption does change captioned samples


@pytest.mark.parametrize(
    "overrides",
    [
        {"xaligner": {"visual_memory": "patches"}},
        {"xaligner": {"init": "learned"}},
        {"xaligner": {"schedule": [["text"], ["visual", "caption"], ["text"]], "self_attention": False}},
        {"reference_frames": "all"},
        {"xaligner": {"width": 16}},
    ],
)
def test_configured_variants_encode(overrides):
    model = _with_open_gates(build_retriever(tiny_model_config(**overrides))).eval()
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    q = model.encode_query(_frames(), EDITS, CAPTIONS, frame_mask=mask)
    assert q.shape == (4, 4, 16) and torch.isfinite(q).all()
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(4, 4))


def test_target_encoding_and_pooling():
    model = build_retriever(tiny_model_config()).eval()
    frames = _frames()
    per_frame = model.encode_target_frames(frames)
    assert per_frame.shape == (4, 4, 4, 16)
    weights = torch.softmax(torch.randn(4, 4), dim=1)
    pooled = model.encode_target(frames, weights)
    torch.testing.assert_close(pooled, (per_frame * weights[:, :, None, None]).sum(1))
    torch.testing.assert_close(model.encode_target_embeddings(per_frame.mean(2), weights), pooled.mean(1))
    one = model.encode_target(frames[:, 1])  # [B,3,H,W] = one-frame video
    torch.testing.assert_close(one, per_frame[:, 1])


def test_similarity_modes_against_brute_force():
    g = torch.Generator().manual_seed(1)
    q = torch.nn.functional.normalize(torch.randn(3, 4, 8, generator=g), dim=-1)
    t = torch.nn.functional.normalize(torch.randn(5, 4, 8, generator=g), dim=-1)
    mean_ref = torch.tensor([[float(q[i].mean(0) @ t[j].mean(0)) for j in range(5)] for i in range(3)])
    max_ref = torch.tensor([[max(float(q[i].mean(0) @ t[j, k]) for k in range(4)) for j in range(5)] for i in range(3)])
    pair_ref = torch.tensor([[max(float(q[i, a] @ t[j, k]) for a in range(4) for k in range(4)) for j in range(5)] for i in range(3)])
    torch.testing.assert_close(similarity(q, t, "mean"), mean_ref)
    torch.testing.assert_close(similarity(q, t.mean(1), "mean"), mean_ref)
    torch.testing.assert_close(similarity(q, t, "max_target_token"), max_ref)
    torch.testing.assert_close(similarity(q, t, "max_token_pair"), pair_ref)
    for mode in ("max_target_token", "max_token_pair"):
        with pytest.raises(ValueError, match="token-level"):
            similarity(q, t.mean(1), mode)


def test_bad_inputs_are_named():
    model = build_retriever(tiny_model_config()).eval()
    with pytest.raises(ValueError, match="expects 32x32"):
        model.encode_query(torch.randn(2, 1, 3, 48, 48), EDITS[:2])
    with pytest.raises(ValueError, match="edit texts"):
        model.encode_query(_frames(), EDITS[:2])
    with pytest.raises(ValueError, match="at least one real frame"):
        model.encode_query(_frames(), EDITS, frame_mask=torch.zeros(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="max_frames"):
        model.encode_query(torch.randn(1, 9, 3, 32, 32), EDITS[:1])
