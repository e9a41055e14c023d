"""Check covr's converter against a reference fixture produced by the original LAVIS code.

    covr-verify-fixture ../shared/fixtures/lavis_blip2_tiny.pt [--atol 1e-5]
    covr-verify-fixture ../shared/fixtures/lavis_blip_tiny.pt

Builds the model the fixture describes, loads its LAVIS state dict through the same converter
real checkpoints use, recomputes every stored output it knows from the fixture's inputs,
prints the max |difference| per output and exits 1 if any exceeds the tolerance.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from covr.models.backbone import TextTokens
from covr.models.build import backbone_from_weights
from covr.models.formats import inspect_object
from covr.tools import HelpFormatter

# Outputs a retrieval converter cannot produce, with the reason printed instead of a number.
_MOMENTUM = "momentum-encoder output: the *_m copies only serve training (queues, distillation) and are dropped on conversion"
NOT_COMPUTED = {
    "itg_lm_logits": "needs the language-model head Qformer.cls.*, which retrieval drops",
    "image_feat_m": _MOMENTUM,
    "text_feat_m": _MOMENTUM,
}


def _vision_spec(vision: dict[str, Any]) -> dict[str, Any]:
    """A fixture's ViT config -> what the tensor shapes cannot tell (heads, eps, activation, size)."""
    return {"num_attention_heads": vision["num_heads"], "layer_norm_eps": vision["layer_norm_eps"], "hidden_act": "gelu", "image_size": vision["img_size"]}


def _text_spec(text: dict[str, Any]) -> dict[str, Any]:
    """A fixture's BERT / Q-Former config -> what the tensor shapes cannot tell."""
    return {
        "num_attention_heads": text["num_attention_heads"],
        "layer_norm_eps": text["layer_norm_eps"],
        "hidden_act": text.get("hidden_act", "gelu"),
        "pad_token_id": text.get("pad_token_id", 0),
    }


def blip2_base_spec(config: dict[str, Any]) -> dict[str, Any]:
    """What the BLIP-2 fixture's config says and the tensor shapes cannot (heads, eps, activation)."""
    vision = {**_vision_spec(config["vision"]), "qkv_bias": bool(config["vision"].get("qkv_bias", True))}
    return {"vision_config": vision, "qformer_config": _text_spec(config["qformer"]), "post_layernorm_eps": config["ln_vision"]["eps"]}


def _tokens(entry: dict[str, Tensor]) -> TextTokens:
    return TextTokens(entry["input_ids"], entry["attention_mask"])


def blip2_outputs(fixture: dict[str, Any], attn: str) -> tuple[dict[str, Tensor], list[str]]:
    """Recompute the BLIP-2 fixture outputs with covr's backbone. Returns (outputs, notes)."""
    config, inputs = fixture["config"], fixture["inputs"]
    source = inspect_object({"model": fixture["state_dict"]}, "fixture state_dict")  # as a real LAVIS .pth is
    cfg = {"family": "blip2", "weights": "fixture", "tokenizer": fixture["vocab"], "spec": blip2_base_spec(config), "attn_implementation": attn}
    backbone = backbone_from_weights(cfg, source).eval()
    notes = _check_tokenizer(backbone, inputs, config["max_txt_len"])
    text_mode, max_len = _tokens(inputs["tokens_text_mode"]), _tokens(inputs["tokens_max_txt_len"])
    b = backbone
    out: dict[str, Tensor] = {}
    with torch.no_grad():
        vm = b.vision_model
        out["vit_pre_ln"] = vm.encoder(vm.embeddings(inputs["image"])).last_hidden_state
        vision = out["vision_tokens"] = b.vision_tokens(inputs["image"])
        out["image_embeds"] = b.image_query_hidden(vision)
        out["image_embeds_proj"] = b.image_embeddings(vision)
        out["text_embeds"] = b.text_hidden(text_mode)
        out["text_embeds_proj"] = F.normalize(b.text_projection(out["text_embeds"]), dim=-1)
        out["multimodal_embeds"] = b.joint_hidden(vision, _tokens(inputs["tokens_multimodal_mode"]))
        out["text_feat"] = b.text_embedding(max_len)
        out["itc_sim_i2t"] = torch.einsum("iqe,te->itq", out["image_embeds_proj"], out["text_feat"]).amax(-1)
        hidden = out["composed_query_hidden"] = b.joint_hidden(vision, max_len)
        out["composed_query_tokens"] = b.project_query(hidden)
        out["composed_query"] = out["composed_query_tokens"].mean(1)
        out["itm_logits"] = b.itm_logits(vision, max_len)
        out["itm_score"] = out["itm_logits"][:, 1]
        out["itm_logits_all_pairs"] = _all_pairs(lambda v, t: b.itm_logits(v, t), vision, max_len)
    return out, notes


def _all_pairs(fn: Callable[[Tensor, TextTokens], Tensor], vision: Tensor, tokens: TextTokens) -> Tensor:
    """[i, t] = fn(image i, text t) for every pair -> [N, T, ...]."""
    n, t = vision.shape[0], tokens.input_ids.shape[0]
    v = vision.repeat_interleave(t, dim=0)
    tt = TextTokens(tokens.input_ids.repeat(n, 1), tokens.attention_mask.repeat(n, 1))
    res = fn(v, tt)
    return res.view(n, t, *res.shape[1:])


def _check_tokenizer(backbone, inputs: dict[str, Any], max_len: int) -> list[str]:
    """The converted tokenizer must give the fixture's token ids (longest padding and max_txt_len)."""
    notes = []
    for key, kwargs in (("tokens_text_mode", {"padding": "longest", "max_length": 10_000}), ("tokens_max_txt_len", {"padding": "max_length", "max_length": max_len})):
        ours = backbone.tokenize(inputs["text"], **kwargs)
        same = ours.input_ids.shape == inputs[key]["input_ids"].shape and torch.equal(ours.input_ids, inputs[key]["input_ids"])
        notes.append(f"tokenizer {key}: {'identical' if same else 'DIFFERENT'}")
    return notes


def blip_base_spec(config: dict[str, Any]) -> dict[str, Any]:
    """What the BLIP fixture's config says and the tensor shapes cannot (heads, eps, activation)."""
    return {"vision_config": _vision_spec(config["vision"]), "text_config": _text_spec(config["text"])}


def blip_outputs(fixture: dict[str, Any], attn: str) -> tuple[dict[str, Tensor], list[str]]:
    """Recompute the BLIP fixture outputs with covr's backbone, loaded through format detection and
    the LAVIS BLIP converter exactly as a real `.pth` is. Returns (outputs, notes)."""
    config, inputs = fixture["config"], fixture["inputs"]
    source = inspect_object({"model": fixture["state_dict"]}, "fixture state_dict")
    cfg = {"family": "blip", "weights": "fixture", "tokenizer": fixture["vocab"], "spec": blip_base_spec(config)}
    b = backbone_from_weights(cfg, source).eval()
    max_len = config["max_txt_len"]
    ours = b.tokenize(inputs["text"], max_len, padding="max_length")
    notes = [f"attention: eager (transformers' BLIP text encoder has no {attn} path)" if attn != "eager" else "attention: eager"]
    for key, ids in (("tokens_text_mode", ours.input_ids), ("tokens_multimodal_mode", torch.cat([torch.full_like(ours.input_ids[:, :1], b.enc_token_id), ours.input_ids[:, 1:]], 1))):
        same = ids.shape == inputs[key]["input_ids"].shape and torch.equal(ids, inputs[key]["input_ids"])
        notes.append(f"tokenizer {key}: {'identical' if same else 'DIFFERENT'}")
    text = _tokens(inputs["tokens_text_mode"])
    out: dict[str, Tensor] = {}
    with torch.no_grad():
        vision = out["vision_tokens"] = b.vision_tokens(inputs["image"])
        out["image_feat"] = b.image_embeddings(vision)[:, 0]
        out["text_embeds"] = b.text_hidden(text)
        out["text_feat"] = b.text_embedding(text)
        out["itc_sim_i2t"] = out["image_feat"] @ out["text_feat"].T
        out["multimodal_embeds"] = b.multimodal_hidden(vision, text)  # [ENC] replaces [CLS] inside
        out["composed_query"] = b.project_query(b.joint_hidden(vision, text))[:, 0]
        out["itm_logits"] = b.itm_logits(vision, text)
        out["itm_logits_all_pairs"] = _all_pairs(lambda v, t: b.itm_logits(v, t), vision, text)
    return out, notes


BUILDERS: dict[str, Callable[[dict[str, Any], str], tuple[dict[str, Tensor], list[str]]]] = {
    "lavis.blip2_qformer": blip2_outputs,
    "lavis.blip_retrieval": blip_outputs,
}


def verify(path: str | Path, atol: float = 1e-5, attn: str = "eager") -> tuple[bool, list[str]]:
    """Returns (all within tolerance, report lines)."""
    fixture = torch.load(path, map_location="cpu", weights_only=True)
    fmt = fixture.get("format")
    if fmt not in BUILDERS:
        raise SystemExit(f"{path}: fixture format {fmt!r} is not supported (known: {', '.join(BUILDERS)})")
    ours, notes = BUILDERS[fmt](fixture, attn)
    ok = all("DIFFERENT" not in n for n in notes)
    lines = [f"fixture {path} ({fmt}), attention={attn}, tolerance {atol:g}"] + notes
    for key, ref in fixture["outputs"].items():
        if key in NOT_COMPUTED or key not in ours:
            lines.append(f"  {key:<24} skipped: {NOT_COMPUTED.get(key, 'not an output covr knows how to compute')}")
            continue
        if tuple(ours[key].shape) != tuple(ref.shape):
            ok = False
            lines.append(f"  {key:<24} shape {tuple(ours[key].shape)} != {tuple(ref.shape)}  FAIL")
            continue
        diff = (ours[key].float() - ref.float()).abs().max().item()
        ok &= diff <= atol
        lines.append(f"  {key:<24} max|diff| {diff:.2e}  {'ok' if diff <= atol else 'FAIL'}")
    return ok, lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="covr-verify-fixture", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("fixture", type=Path, help="a LAVIS reference fixture (.pt)")
    parser.add_argument("--atol", type=float, default=1e-5, help="largest max |difference| that passes")
    parser.add_argument("--attn", choices=["eager", "sdpa"], default="eager", help="attention implementation")
    args = parser.parse_args(argv)
    if not args.fixture.is_file():
        print(f"error: fixture {args.fixture} does not exist", file=sys.stderr)
        return 2
    ok, lines = verify(args.fixture, args.atol, args.attn)
    print("\n".join(lines))
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
