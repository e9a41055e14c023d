"""The BLIP converter reproduces the original LAVIS outputs (../shared/fixtures/lavis_blip_tiny.pt)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from conftest import REPO
from covr.tools.verify_fixture import blip_outputs, main

ATOL = 1e-5
CHECKED = [
    "vision_tokens", "image_feat", "text_embeds", "text_feat", "itc_sim_i2t", "multimodal_embeds", "composed_query",
    "itm_logits", "itm_logits_all_pairs",
]  # fmt: skip


@pytest.fixture(scope="module")
def fixture(blip_fixture_path):
    return torch.load(blip_fixture_path, map_location="cpu", weights_only=True)


def test_every_online_output_matches_lavis(fixture):
    ours, notes = blip_outputs(fixture, "eager")
    assert notes[1:] == ["tokenizer tokens_text_mode: identical", "tokenizer tokens_multimodal_mode: identical"]
    assert set(CHECKED) | {"image_feat_m", "text_feat_m"} == set(fixture["outputs"])
    for key in CHECKED:
        ref = fixture["outputs"][key]
        assert ours[key].shape == ref.shape, key
        torch.testing.assert_close(ours[key], ref, atol=ATOL, rtol=0, msg=key)


def test_tool_passes_and_reports_momentum_outputs_as_skipped(blip_fixture_path):
    run = subprocess.run([sys.executable, "-m", "covr.tools.verify_fixture", str(blip_fixture_path)], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert "PASS" in lines[-1] and any(line.split()[:1] == ["composed_query"] and line.endswith("ok") for line in lines)
    for key in ("image_feat_m", "text_feat_m"):
        assert any(line.split()[:2] == [key, "skipped:"] and "momentum" in line for line in lines), run.stdout


@pytest.mark.parametrize("online", ["text_proj", "visual_encoder.blocks.1.attn.qkv", "text_encoder.encoder.layer.0.crossattention.self.query"])
def test_tool_fails_when_the_momentum_copy_is_loaded(fixture, tmp_path, capsys, online):
    """The *_m copies hold other weights: a converter that read them instead would be caught."""
    bad = dict(fixture)
    state = dict(fixture["state_dict"])
    head, rest = online.split(".", 1) if "." in online else (online, "")
    for kind in ("weight", "bias"):
        key = f"{online}.{kind}"
        state[key] = state[f"{head}_m.{rest + '.' if rest else ''}{kind}"]
    bad["state_dict"] = state
    path = tmp_path / "momentum.pt"
    torch.save(bad, path)
    assert main([str(path)]) == 1
    assert "FAIL" in capsys.readouterr().out
