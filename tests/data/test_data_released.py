"""Importing released embeddings: CoVR's per-video .pth files (BLIP-2 [F, 32, 256], BLIP [F, 256])
and CIRCO's all_embs.pt, written here in those formats, become covr stores holding the same values,
with a completeness report (missing and unreadable ids listed) before anything uses them."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from helpers_data import triplet, write_csv

from covr.data.embedding_store import EmbeddingStore
from covr.tools.import_embeddings import main


class NotATensor:
    """Pickled by reference: a weights-only load must refuse it (and never run anything)."""


def _videos(tmp_path, family, frames_of):
    folder = tmp_path / "embs"
    values = {}
    for video, frames in frames_of.items():
        shape = (frames, 32, 256) if family == "blip2" else (frames, 256)
        values[video] = torch.randn(*shape, generator=torch.Generator().manual_seed(len(values)))
        (folder / video).parent.mkdir(parents=True, exist_ok=True)
        torch.save(values[video].half(), folder / f"{video}.pth")  # the released files are fp16 tensors
    return folder, values


@pytest.mark.parametrize("family", ["blip2", "blip"])
def test_covr_per_video_files_into_a_store_with_a_completeness_report(tmp_path, family, capsys):
    videos = {f"0001_0099/{100 + i}": 15 for i in range(5)}
    videos["0001_0099/104"] = 12  # a shorter video
    folder, values = _videos(tmp_path, family, videos)
    torch.save({"oops": NotATensor()}, folder / "0001_0099" / "101.pth")  # an object, not a tensor
    (folder / "0001_0099" / "102.pth").write_bytes(b"truncated")
    torch.save(torch.zeros(15, 7), folder / "0001_0099" / "103.pth")  # not this family's shape
    del values["0001_0099/101"], values["0001_0099/102"], values["0001_0099/103"]
    torch.save(torch.zeros(15, 32, 256), folder / "extra.pth")  # not in the CSV: left out
    rows = [triplet("0001_0099/100", f"0001_0099/{100 + i}") for i in range(6)]  # 105 has no file
    csv_path = write_csv(tmp_path / "test.csv", rows)
    out = tmp_path / "store"
    args = ["--pth-folder", str(folder), "--family", family, "--csv", str(csv_path), "--identity", "covr2-release", "--out", str(out)]
    assert main(args) == 1  # something expected is missing: non-zero exit
    printed = capsys.readouterr().out
    assert "2 of 6 expected ids imported; 1 missing (e.g. 0001_0099/105), 3 unreadable, 1 not expected" in printed
    report = (out / "import-report.txt").read_text().splitlines()
    assert "missing\t0001_0099/105" in report
    assert {line.split("\t")[1] for line in report if line.startswith("unreadable")} == {"0001_0099/101", "0001_0099/102", "0001_0099/103"}
    assert any("UnpicklingError" in line or "Weights only load failed" in line for line in report if "101" in line)

    store = EmbeddingStore.open(out, "covr2-release", kind="video")
    assert store.frame_shape == ((32, 256) if family == "blip2" else (256,)) and store.max_frames == 15
    assert sorted(store.missing_ids()) == ["0001_0099/101", "0001_0099/102", "0001_0099/103", "0001_0099/105"]
    for video, tensor in values.items():
        stored, n = store.get(video)
        assert n == len(tensor) and np.array_equal(stored, tensor.half().numpy())
    assert main(args + ["--allow-missing"]) == 0


def test_circo_all_embs_into_a_store(tmp_path, capsys):
    ids = [9, 4, 77, 123456]
    embs = torch.randn(len(ids), 32, 256)
    torch.save({"ids": ids, "embs": embs}, tmp_path / "all_embs.pt")
    info = {"images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in ids + [555]]}  # 555 was never embedded
    (tmp_path / "info.json").write_text(json.dumps(info))
    out = tmp_path / "circo-store"
    args = ["--all-embs", str(tmp_path / "all_embs.pt"), "--family", "blip2", "--coco-info", str(tmp_path / "info.json"),
            "--identity", "circo-blip2", "--out", str(out), "--dtype", "float32"]  # fmt: skip
    assert main(args) == 1 and "4 of 5 expected ids imported; 1 missing (e.g. 555)" in capsys.readouterr().out
    store = EmbeddingStore.open(out, "circo-blip2")
    for i, image in enumerate(ids):
        stored, n = store.get(str(image))
        assert n == 1 and np.array_equal(stored[0], embs[i].numpy())  # an image is a one-frame video
    assert store.missing_ids() == ["555"]


def test_bad_all_embs_and_identity_from_weights(tmp_path, capsys):
    torch.save([1, 2, 3], tmp_path / "all_embs.pt")
    assert main(["--all-embs", str(tmp_path / "all_embs.pt"), "--family", "blip2", "--identity", "x", "--out", str(tmp_path / "s")]) == 2
    assert re.fullmatch(r"error: .*all_embs.pt: expected \{'ids': \[...\], 'embs': tensor\}.*\n", capsys.readouterr().err)
    torch.save({"ids": [1], "embs": NotATensor()}, tmp_path / "evil.pt")
    assert main(["--all-embs", str(tmp_path / "evil.pt"), "--family", "blip2", "--identity", "x", "--out", str(tmp_path / "s")]) == 2
    assert re.fullmatch(r"error: .*not a readable weights-only torch file.*\n", capsys.readouterr().err)

    from conftest import tiny_model_config
    from covr.models import build_retriever
    from covr.models.folder import save_model_folder

    model = build_retriever(tiny_model_config())
    save_model_folder(model, tmp_path / "model")
    torch.save({"ids": [1, 2], "embs": torch.randn(2, 4, 16)}, tmp_path / "all_embs.pt")
    out = tmp_path / "tiny-store"
    assert main(["--all-embs", str(tmp_path / "all_embs.pt"), "--family", "blip2", "--identity-from", str(tmp_path / "model"), "--out", str(out)]) == 0
    assert EmbeddingStore.open(out).identity == model.target_identity  # evaluation with that model accepts it as is
