"""The BLIP-2 converter reproduces the original LAVIS outputs (../shared/fixtures/lavis_blip2_tiny.pt)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from conftest import REPO
from covr.tools.verify_fixture import blip2_outputs, main

ATOL = 1e-5
CHECKED = [
    "vit_pre_ln", "vision_tokens", "image_embeds", "image_embeds_proj", "text_embeds", "text_embeds_proj",
    "multimodal_embeds", "text_feat", "itc_sim_i2t", "composed_query_hidden", "composed_query_tokens",
    "composed_query", "itm_logits", "itm_score", "itm_logits_all_pairs",
]


@pytest.fixture(scope="module")
def fixture(blip2_fixture_path):
    return torch.load(blip2_fixture_path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_every_output_matches_lavis(fixture, attn):
    ours, notes = blip2_outputs(fixture, attn)
    assert notes == ["tokenizer tokens_text_mode: identical", "tokenizer tokens_max_txt_len: identical"]
    for key in CHECKED:
        ref = fixture["outputs"][key]
        assert ours[key].shape == ref.shape, key
        torch.testing.assert_close(ours[key], ref, atol=ATOL, rtol=0, msg=key)


def test_tool_passes_in_a_subprocess(blip2_fixture_path):
    run = subprocess.run([sys.executable, "-m", "covr.tools.verify_fixture", str(blip2_fixture_path)], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "composed_query " in run.stdout and "PASS" in run.stdout


def test_tool_fails_on_a_wrong_query_bias(fixture, tmp_path, capsys):
    """A query-bias error moves outputs by ~1e-4 only; the 1e-5 tolerance must catch it."""
    bad = dict(fixture)
    bad["state_dict"] = dict(fixture["state_dict"])
    key = "Qformer.bert.encoder.layer.0.crossattention.self.query.bias"
    bad["state_dict"][key] = fixture["state_dict"][key] + 0.02 * torch.randn_like(fixture["state_dict"][key])
    path = tmp_path / "bad.pt"
    torch.save(bad, path)
    assert main([str(path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "composed_query_hidden" in out


def test_tool_reads_any_fixture_of_the_format(fixture, tmp_path, capsys):
    """Another fixture of the same format (fewer outputs, a changed reference value) is handled
    generically: missing outputs are not required, a changed one fails and is named."""
    other = dict(fixture)
    other["outputs"] = {k: fixture["outputs"][k] for k in ("vision_tokens", "text_feat")}
    other["outputs"]["text_feat"] = other["outputs"]["text_feat"] + 1e-3
    path = tmp_path / "other.pt"
    torch.save(other, path)
    assert main([str(path)]) == 1
    out = capsys.readouterr().out
    assert "vision_tokens" in out and "text_feat" in out and "FAIL" in out and "image_embeds " not in out
