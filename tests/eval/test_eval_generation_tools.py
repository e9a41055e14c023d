"""The two generation tools on a tiny random BLIP-2 (OPT language model, a word-level tokenizer
written here) saved offline: covr-caption-queries writes the caption file the evaluator reads (each
reference once, the caption its own generation), covr-soft-constraints runs an image-text-to-text
pipeline over every query and writes a constraint file the evaluator accepts; the answer parser on
hand-written answers. A random model's words carry no meaning: real captions need real weights."""

from __future__ import annotations

import json

import pytest
import torch
from helpers_eval import ColourRetriever
from layouts_eval import make_cir_jsonl

from conftest import tiny_model_config
from covr.eval import evaluate_benchmark
from covr.models import build_retriever
from covr.tools import caption_queries, soft_constraints

WORDS = ["<pad>", "</s>", "<s>", "<unk>", "a", "photo", "of", "red", "cat", "dog", "must", "not", ":", "sky", "tree", "car"]


@pytest.fixture(scope="module")
def blip2_folder(tmp_path_factory):
    """A tiny Blip2ForConditionalGeneration + Blip2Processor, saved and reloaded with no network."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import (Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, Blip2QFormerConfig, Blip2VisionConfig,
                              BlipImageProcessor, OPTConfig, PreTrainedTokenizerFast)  # fmt: skip

    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    core.pre_tokenizer, core.decoder = pre_tokenizers.WhitespaceSplit(), decoders.WordPiece(prefix="##")
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)])  # OPT's BOS first
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", bos_token="<s>", unk_token="<unk>")
    processor = Blip2Processor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer, num_query_tokens=4)
    vocab, small = len(tokenizer), {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = Blip2Config(
        vision_config=Blip2VisionConfig(**small, intermediate_size=64, image_size=32, patch_size=16).to_dict(),
        qformer_config=Blip2QFormerConfig(**small, intermediate_size=64, encoder_hidden_size=32, vocab_size=vocab).to_dict(),
        text_config=OPTConfig(**small, vocab_size=vocab, ffn_dim=64, word_embed_proj_dim=32, max_position_embeddings=64,
                              pad_token_id=0, eos_token_id=1, bos_token_id=2, tie_word_embeddings=False).to_dict(),  # fmt: skip
        num_query_tokens=4, image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(0)
    model = Blip2ForConditionalGeneration(config).eval()
    with torch.no_grad():  # special tokens score 0, so a random model still writes words (and runs to max_new_tokens)
        model.language_model.lm_head.weight[[WORDS.index(t) for t in ("<pad>", "</s>", "<s>", "<unk>")] + [len(WORDS)]] = 0.0
    folder = tmp_path_factory.mktemp("tiny-blip2")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture
def edir(tmp_path):
    fixture = make_cir_jsonl(tmp_path / "EDIR", n_images=8, n_queries=6)
    options = [f"annotation={tmp_path / 'EDIR' / 'edir.jsonl'}", f"image_root={tmp_path / 'EDIR' / 'images'}", "image_extension=.jpg"]
    cfg = {"reader": "cir_jsonl", "annotation": str(tmp_path / "EDIR" / "edir.jsonl"), "image_root": str(tmp_path / "EDIR" / "images"), "image_extension": ".jpg"}
    return fixture, ["--reader", "cir_jsonl"] + [x for o in options for x in ("--option", o)], cfg


def test_caption_file_holds_each_reference_once_with_its_own_caption(blip2_folder, edir, tmp_path, capsys):
    fixture, benchmark, cfg = edir
    out = tmp_path / "captions.jsonl"
    assert caption_queries.main(["--model", str(blip2_folder), *benchmark, "--out", str(out), "--max-new-tokens", "4", "--batch-size", "2"]) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    references = list(dict.fromkeys(q["reference"] for q in fixture["queries"]))
    assert [x["id"] for x in lines] == references and all(isinstance(x["caption"], str) for x in lines)
    assert all(x["caption"] for x in lines)  # words, not only special tokens
    assert f"{len(references)} captions" in capsys.readouterr().out

    processor, model = caption_queries.load_captioner(str(blip2_folder), "cpu", "float32")
    path = {q["reference"]: q["path"] for q in fixture["queries"]}
    for x in lines[:2]:  # the same image captioned alone, by hand: the same words
        inputs = processor(images=[caption_queries.middle_frame(path[x["id"]])], return_tensors="pt")  # transformers' own recipe: no text
        generated = model.generate(**inputs, max_new_tokens=4)
        assert x["caption"] == processor.batch_decode(generated, skip_special_tokens=True)[0].strip()
        assert set(x["caption"].split()) <= set(WORDS)

    retriever = ColourRetriever()  # the evaluator feeds every query its reference's caption (cleaned)
    evaluate_benchmark(retriever, {**cfg, "caption_file": str(out)}, tmp_path / "out", num_workers=0)
    caption_of = {x["id"]: x["caption"] for x in lines}
    assert retriever.captions_seen == [" ".join(caption_of[q["reference"]].lower().split()) for q in fixture["queries"]]


def test_soft_constraints_tool_writes_a_file_the_evaluator_reranks_with(blip2_folder, edir, tmp_path, capsys):
    fixture, benchmark, cfg = edir
    out = tmp_path / "soft.jsonl"
    assert soft_constraints.main(["--model", str(blip2_folder), *benchmark, "--out", str(out), "--max-new-tokens", "3"]) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["id"] for x in lines] == [q["id"] for q in fixture["queries"]]
    assert all(isinstance(x[k], str) for x in lines for k in ("prescriptive", "proscriptive", "raw"))
    assert "6 queries" in capsys.readouterr().out
    torch.manual_seed(0)
    result = evaluate_benchmark(build_retriever(tiny_model_config()).eval(), {**cfg, "rerank": "soft", "constraint_file": str(out)}, tmp_path / "o", num_workers=0)
    assert result["protocol"]["name"] == "covr+soft"


def test_chat_models_get_a_chat_message_and_plain_models_skip_text_only_queries(blip2_folder, tmp_path, capsys):
    from PIL import Image
    from transformers import pipeline

    pipe = pipeline("image-text-to-text", model=str(blip2_folder))
    image = Image.new("RGB", (40, 30), (200, 30, 30))
    plain = soft_constraints.ask(pipe, image, "must have a red car", 3)
    pipe.processor.chat_template = (  # a real template on the real processor: the chat path of an instruction-tuned MLLM
        "{% for m in messages %}{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %}"
    )
    chat = soft_constraints.ask(pipe, image, "must have a red car", 3)
    assert isinstance(plain, str) and isinstance(chat, str) and len(chat.split()) == 3
    (tmp_path / "q.jsonl").write_text(json.dumps({"id": "t", "text": "a red car", "target": "x"}) + "\n")
    argv = ["--model", str(blip2_folder), "--reader", "cir_jsonl", "--option", f"annotation={tmp_path / 'q.jsonl'}",
            "--option", f"image_root={tmp_path}", "--out", str(tmp_path / "soft.jsonl")]  # fmt: skip
    assert soft_constraints.main(argv) == 0
    assert json.loads((tmp_path / "soft.jsonl").read_text()) == {"id": "t", "prescriptive": "", "proscriptive": "", "raw": ""}
    assert "1 text-only queries left unconstrained" in capsys.readouterr().out


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("MUST: a red car\nMUST NOT: people", ("a red car", "people")),
        ("must show: two dogs on grass\nMust not: none", ("two dogs on grass", "")),
        ("  - MUST NOT: a hat\n  - MUST: a blue sky.", ("a blue sky.", "a hat")),
        ("a photo of a cat", None),
    ],
)
def test_constraint_answers_parse(answer, expected):
    assert soft_constraints.parse_constraints(answer) == expected


def test_tools_name_a_missing_model_in_one_line(edir, tmp_path, capsys):
    _, benchmark, _ = edir
    assert caption_queries.main(["--model", str(tmp_path / "nowhere"), *benchmark, "--out", str(tmp_path / "c.jsonl")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert caption_queries.main(["--model", "x", "--reader", "cir_jsonl", "--option", "annotation", "--out", str(tmp_path / "c.jsonl")]) == 2
    assert "--option expects KEY=VALUE" in capsys.readouterr().err
