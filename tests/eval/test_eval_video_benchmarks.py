"""EgoCVR and TF-CoVR with a real tiny covr retriever on real mp4 files in the official layouts:
the evaluator's metrics equal a brute-force loop over the same model; multi-frame queries take the
checkpoint's frame count; clips cut from full videos (one past its video's end); missing videos."""

from __future__ import annotations

import pytest
import torch
import transcriptions_video as TV
from layouts_video import UIDS, make_egocvr, make_tf_covr

from conftest import open_xaligner, tiny_model_config
from covr.data.errors import MissingVideosError
from covr.data.transforms import TestTransform
from covr.data.video import load_frames
from covr.eval import evaluate_benchmark
from covr.eval.datasets.egocvr import clip_span
from covr.models import build_retriever

TARGET_FRAMES = 3


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    retriever = open_xaligner(build_retriever(tiny_model_config())).eval()
    retriever.query_frames = {"num_frames": 3, "strategy": "random"}  # as a checkpoint trained on 3 frames records it
    return retriever


def frames(model, path, count, strategy, span=None):
    return TestTransform(model.image_size)(load_frames(path, count, strategy, span=span))[None]  # [1, F, 3, S, S]


def unit_mean(tokens):
    mean = tokens.mean(0)
    return (mean / mean.norm()).tolist()


def brute_egocvr(model, fixture, setting, media):
    """Every clip and query encoded one at a time, ranked as transcriptions_video.egocvr does."""
    with torch.no_grad():
        clips = {c: model.encode_target(frames(model, media(c)[0], TARGET_FRAMES, "uniform", media(c)[1]))[0] for c in set(fixture["data"])}
        queries = []
        for q in fixture["queries"]:
            path, span = media(q["reference"])
            text = TV.pre_caption(q["text"])
            queries.append(model.encode_query(frames(model, path, 3, "uniform", span), [text])[0].tolist())
    frames_of = {c: [t.tolist()] for c, t in clips.items()}  # one "frame": the model's own frame pooling
    return TV.egocvr(fixture["queries"], fixture["data"], frames_of, queries, setting)


def evaluate(model, cfg, tmp_path, **options):
    cfg = {"target_frames": TARGET_FRAMES, **cfg}
    return evaluate_benchmark(model, cfg, tmp_path / "out", batch_size=4, num_workers=0, **options)


@pytest.mark.parametrize("setting", ["global", "local"])
def test_egocvr_clips_with_a_tiny_model(model, tmp_path, setting):
    fixture = make_egocvr(tmp_path / "EgoCVR")
    root = tmp_path / "EgoCVR"
    result = evaluate(model, {"reader": "egocvr", "root": str(root), "setting": setting}, tmp_path)
    (task,) = result["tasks"].values()
    expected, unscored = brute_egocvr(model, fixture, setting, lambda c: (root / "data/egocvr_clips" / fixture["uid"][c] / f"{c}.mp4", None))
    assert task["counts"]["queries_unscored"] == unscored and task["query_frames"] == {"num_frames": 3, "strategy": "uniform", "from": "checkpoint"}
    for key, value in expected.items():
        assert result["metrics"][key] == pytest.approx(value), key
    assert result["protocol"]["name"] == "egocvr" and result["options"]["target_frames"] == TARGET_FRAMES


def test_egocvr_spans_of_full_videos_one_past_the_end(model, tmp_path):
    fixture = make_egocvr(tmp_path / "EgoCVR", full_videos=True)
    root = tmp_path / "EgoCVR"
    cfg = {"reader": "egocvr", "root": str(root), "video_source": "full_videos", "ego4d_root": str(root / "ego4d")}
    result = evaluate(model, cfg, tmp_path)
    assert result["counts"]["gallery_skipped"] == 0 and result["counts"]["queries_dropped"] == 0  # 6-8 s of a 7.6 s video decodes

    def media(clip):
        return root / "ego4d/v2/full_scale" / f"{fixture['uid'][clip]}.mp4", clip_span(clip)

    expected, _ = brute_egocvr(model, fixture, "global", media)
    for key, value in expected.items():
        assert result["metrics"][key] == pytest.approx(value), key
    assert clip_span(f"{fixture['queries'][0]['reference'].rsplit('_', 2)[0]}_5-5_7-25") == (5.5, 7.25)


def test_missing_egocvr_clips(model, tmp_path):
    lost = f"{UIDS[0]}_4_6"  # a target of queries 4 and 5, listed twice in egocvr_data.csv
    fixture = make_egocvr(tmp_path / "EgoCVR", missing=lost)
    cfg = {"reader": "egocvr", "root": str(tmp_path / "EgoCVR"), "name": "egocvr"}
    with pytest.raises(MissingVideosError, match=rf"egocvr/global: query 4: target {lost}: file not found.*benchmark\.egocvr\.allow_missing=true"):
        evaluate(model, cfg, tmp_path)
    result = evaluate(model, {**cfg, "allow_missing": True}, tmp_path)
    affected = sum(lost in q["targets"] for q in fixture["queries"])
    assert affected == 2 and result["counts"]["queries_dropped"] == affected and result["counts"]["gallery_skipped"] == 1
    assert result["counts"]["queries"] == len(fixture["queries"]) - affected
    assert result["counts"]["gallery_entries"] == len(fixture["data"]) - 2  # both rows of the lost clip are gone


@pytest.mark.parametrize("protocol", ["tf_covr", "unique"])
def test_tf_covr_with_a_tiny_model(model, tmp_path, protocol):
    fixture = make_tf_covr(tmp_path / "TF-CoVR")
    root = tmp_path / "TF-CoVR"
    result = evaluate(model, {"reader": "tf_covr", "root": str(root), "protocol": protocol}, tmp_path)
    with torch.no_grad():
        videos = {v: [model.encode_target(frames(model, root / "FineGD_videos" / f"{v}.mp4", TARGET_FRAMES, "uniform"))[0].tolist()]
                  for v in fixture["videos"]}  # fmt: skip
        queries = []
        for q in fixture["queries"]:
            reference = frames(model, root / "FineGD_videos" / f"{q['reference']}.mp4", 3, "uniform")
            queries.append(model.encode_query(reference, [TV.tf_covr_text(q["text"])])[0].tolist())
    expected = TV.tf_covr(fixture["queries"], videos, queries, unique=protocol == "unique")
    for key, value in expected.items():
        assert result["metrics"][key] == pytest.approx(value), key
    assert result["options"]["numbers_to_words"] is True and result["options"]["text_rule"] == "tf_covr"


def test_tf_covr_missing_target_video_is_dropped_on_request(model, tmp_path):
    fixture = make_tf_covr(tmp_path / "TF-CoVR", missing=None)
    lost = fixture["queries"][4]["target"]
    (tmp_path / "TF-CoVR" / "FineGD_videos" / f"{lost}.mp4").unlink()
    cfg = {"reader": "tf_covr", "root": str(tmp_path / "TF-CoVR"), "allow_missing": True}
    result = evaluate(model, cfg, tmp_path)
    affected = [q for q in fixture["queries"] if lost in (q["reference"], q["target"]) or lost in q["gts"]]
    assert result["counts"]["queries_dropped"] == len(affected) and result["counts"]["gallery"] == 7
