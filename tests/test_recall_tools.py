"""ReCALL's tools: covr-mine-negatives (the mining rule, and a run over a toy train split with a tiny
checkpoint) and covr-correct-triplets (a real transformers image-text-to-text pipeline over a tiny
random LLaVA built and saved offline), whose file the training data reads."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from conftest import tiny_model_config
from covr.data.annotations import read_webvid_covr_csv
from covr.data.toy import generate_toy_dataset
from covr.data.triplets import read_triplets, with_corrective_triplets
from covr.tools import correct_triplets, mine_negatives
from covr.tools.mine_negatives import mine


def test_mining_keeps_up_to_five_of_the_top_ten_that_outrank_the_target():
    ranked = ["a", "ref", "b", "c", "d", "e", "f", "g", "h", "i", "gt", "j"]
    scores = [float(-i) for i in range(len(ranked))]
    rank, negatives = mine(ranked, scores, "ref", "gt")
    assert rank == 11 and [n["id"] for n in negatives] == ["a", "b", "c", "d", "e"] and [n["rank"] for n in negatives] == [1, 3, 4, 5, 6]
    assert mine(["gt", "a"], [1.0, 0.5], "ref", "gt") == (1, [])  # ranked first: nothing to mine
    rank, negatives = mine(["a", "b", "gt", "c"], [3.0, 2.0, 1.0, 0.5], "ref", "gt")
    assert rank == 3 and [n["id"] for n in negatives] == ["a", "b"]  # only what outranks the target
    rank, negatives = mine([f"x{i}" for i in range(20)], [0.0] * 20, "ref", "gt", top=10, keep=3)
    assert rank is None and [n["id"] for n in negatives] == ["x0", "x1", "x2"]  # target below the list: the top ones


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    generate_toy_dataset(root, num_train=24, num_val=4, num_test=4, num_frames=4, image_size=32)
    cfg = tiny_model_config()
    from covr.models import build_retriever, checkpoint_payload

    model = build_retriever(cfg).eval()
    torch.save({"covr": checkpoint_payload(model, cfg), "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, root / "tiny.ckpt")
    return root


def test_mine_negatives_writes_the_negatives_above_each_target(toy, tmp_path, monkeypatch):
    """The tool's lines are the mining rule applied to the evaluator's train-split ranking (protocol
    `covr`: one column per unique target, the reference removed), row by row of the CSV."""
    from covr.eval import evaluator

    seen = {}
    original = evaluator.write_rankings

    def keep_rankings(path, queries, ranking):  # record what the evaluator ranked, then write as usual
        seen["ranked"] = {q.id: (list(r), list(s)) for q, r, s in zip(queries, ranking.ranked, ranking.scores)}
        return original(path, queries, ranking)

    monkeypatch.setattr(evaluator, "write_rankings", keep_rankings)
    out = tmp_path / "negatives.jsonl"
    args = [str(toy / "tiny.ckpt"), "--csv", str(toy / "toy-covr_train.csv"), "--video-root", str(toy / "videos"), "--out", str(out),
            "--num-workers", "0", "--target-frames", "4", "--top", "6", "--keep", "3"]  # fmt: skip
    assert mine_negatives.main(args) == 0
    rows = list(csv.DictReader(open(toy / "toy-covr_train.csv")))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(seen["ranked"]) == len(rows) and lines
    expected = []
    for query_id, (ranked, scores) in seen["ranked"].items():
        row = rows[int(query_id)]
        assert row["pth1"] not in ranked  # the reference is never a candidate
        rank, negatives = mine(ranked, scores, row["pth1"], row["pth2"], top=6, keep=3)
        if negatives:
            expected.append({"row": int(query_id), "reference": row["pth1"], "edit": row["edit"], "target": row["pth2"], "target_rank": rank, "negatives": negatives})
    assert lines == expected
    assert all(1 <= len(x["negatives"]) <= 3 and all(n["rank"] <= 6 for n in x["negatives"]) for x in lines)


def tiny_image_text_to_text(folder):
    """A LLaVA with a 1-layer CLIP ViT and a 1-layer Llama (random weights), a word-level tokenizer
    with a chat template and a PIL image processor, saved with save_pretrained: everything the
    pipeline loads, made offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration,
                              LlavaProcessor, PreTrainedTokenizerFast)  # fmt: skip

    words = ["<pad>", "<unk>", "<s>", "</s>", "<image>", "yes", "no", "make", "it", "red", "blue", "a", "the", "square", "user", "assistant", ":"]
    vocab = {w: i for i, w in enumerate(words + [f"w{i}" for i in range(40)])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    template = ("{% for m in messages %}{{ m['role'] }} : {% for c in m['content'] %}{% if c['type'] == 'image' %}<image> "
                "{% else %}{{ c['text'] }} {% endif %}{% endfor %}{% endfor %}{% if add_generation_prompt %}assistant : {% endif %}")  # fmt: skip
    tokenizer.chat_template = template
    images = CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    processor = LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default",
                               chat_template=template, image_token="<image>", num_additional_image_tokens=1)  # fmt: skip
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=16, patch_size=8)
    text = LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                       num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0, bos_token_id=2, eos_token_id=3)  # fmt: skip
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(LlavaConfig(vision_config=vision, text_config=text, image_token_index=vocab["<image>"],
                                                      vision_feature_layer=-1, vision_feature_select_strategy="default"))  # fmt: skip
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_correct_triplets_runs_an_image_text_to_text_pipeline_and_training_reads_its_file(toy, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = tiny_image_text_to_text(tmp_path / "tiny-llava")
    ann = read_webvid_covr_csv(toy / "toy-covr_train.csv")
    mined = tmp_path / "negatives.jsonl"
    records = [{"row": r, "reference": ann.reference_id(r), "edit": ann.edit[r], "target": ann.target_id(r),
                "negatives": [{"id": ann.target_id(r + 1), "rank": 1, "score": 0.5}, {"id": ann.target_id(r + 2), "rank": 2, "score": 0.4}]}
               for r in (0, 3, 6)]  # fmt: skip
    mined.write_text("".join(json.dumps(x) + "\n" for x in records))
    out = tmp_path / "corrected.jsonl"
    args = [str(mined), "--video-root", str(toy / "videos"), "--model", str(model), "--out", str(out), "--per-query", "2", "--max-new-tokens", "6"]
    assert correct_triplets.main(args) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert 1 <= len(lines) <= 6  # one per mined negative the random model answered with some text
    pairs = {(x["reference"], x["target"]) for x in records for x in [{"reference": x["reference"], "target": n["id"]} for n in x["negatives"]]}
    for line in lines:
        assert (line["reference"], line["target"]) in pairs and line["edit"].strip() and len(line["answers"]) == len(correct_triplets.VERIFY)
        assert line["verified"] == all(a.lower().startswith("yes") for a in line["answers"])
    triplets, unverified = read_triplets(out)
    assert len(triplets) + unverified == len(lines)
    verified = [dict(x, verified=True) for x in lines]  # what a stricter check would accept: every line
    accepted = tmp_path / "accepted.jsonl"
    accepted.write_text("".join(json.dumps(x) + "\n" for x in verified))
    merged = with_corrective_triplets(ann, accepted)
    assert len(merged) == len(ann) + len(lines)
    assert [merged.edit[len(ann) + i] for i in range(len(lines))] == [x["edit"] for x in lines]
    assert np.array_equal(merged.reference[: len(ann)], ann.reference)


def test_tools_report_bad_input_in_one_line(tmp_path, capsys):
    bad = tmp_path / "mined.jsonl"
    bad.write_text('{"reference": "a", "edit": "b"}\n')
    assert correct_triplets.main([str(bad), "--video-root", str(tmp_path), "--model", "unused", "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "line 1 has no 'negatives'" in capsys.readouterr().err
