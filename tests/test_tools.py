"""The tool convention (covr/tools/__init__.py): every user tool is a package module with a
`[project.scripts]` command and a complete --help; `tools/` holds only benchmarks and ablations;
covr-extract-embeddings runs from an installed package that has no conf/ next to it."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, tiny_model_config

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def test_every_package_tool_has_a_command_and_tools_holds_only_benchmarks():
    modules = {p.stem for p in (REPO / "covr" / "tools").glob("*.py") if p.stem != "__init__"}
    assert {target.split(":")[0] for target in SCRIPTS.values()} == {f"covr.tools.{m}" for m in modules}
    assert all(name == "covr-" + target.split(":")[0].rsplit(".", 1)[1].replace("_", "-") for name, target in SCRIPTS.items())
    assert all(p.stem.startswith(("benchmark_", "ablate_")) for p in (REPO / "tools").glob("*.py"))


@pytest.mark.parametrize("command", sorted(SCRIPTS))
def test_command_help_names_the_command_and_every_default(command, capsys):
    module, function = SCRIPTS[command].split(":")
    main = getattr(importlib.import_module(module), function)
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: {command} ")
    parser_defaults = {"--num-frames": "15", "--dtype": "float16", "--max-words": "30", "--atol": "1e-05", "--split": "test"}
    for option, default in parser_defaults.items():
        if option in text:
            assert f"(default: {default})" in " ".join(text[text.index(option + " ") :].split())


def _tiny_checkpoint(path):
    from covr.models import build_retriever, checkpoint_payload

    cfg = tiny_model_config()
    model = build_retriever(cfg).eval()
    torch.save({"covr": checkpoint_payload(model, cfg), "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
    return model


@pytest.fixture
def media(tmp_path):
    from PIL import Image

    folder = tmp_path / "media"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return folder


def test_extract_embeddings_runs_from_a_package_without_conf(tmp_path, media):
    """The package copied alone (as a wheel installs it), run from another folder: --checkpoint
    needs no config; --model says in one line how to do without one."""
    from covr.data.embedding_store import EmbeddingStore

    site, work = tmp_path / "site", tmp_path / "work"
    shutil.copytree(REPO / "covr", site / "covr", ignore=shutil.ignore_patterns("__pycache__"))
    work.mkdir()
    model = _tiny_checkpoint(tmp_path / "tiny.ckpt")
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    common = ["--folder", str(media), "--num-frames", "1", "--num-workers", "0", "--device", "cpu"]
    command = [sys.executable, "-m", "covr.tools.extract_embeddings", *common]
    run = subprocess.run([*command, "--checkpoint", str(tmp_path / "tiny.ckpt"), "--out", "store"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    store = EmbeddingStore.open(work / "store", expected_identity=model.target_identity)
    assert sorted(store.ids) == ["img0", "img1", "img2"]
    run = subprocess.run([*command, "--model", "blip2", "--out", "other"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and run.stderr.splitlines() == [
        f"error: --model blip2 reads covr's config folder, and {site / 'conf'} is not one; pass --config-dir <covr checkout>/conf, "
        "or give the weights directly: --checkpoint FILE [--image-size N]"
    ], run.stderr[-3000:]


def test_extract_embeddings_model_config_from_any_folder(tmp_path, media, monkeypatch):
    """From a checkout (or an editable install), --model builds the config train.py builds, wherever it runs."""
    from covr.data.embedding_store import EmbeddingStore
    from covr.tools.extract_embeddings import load_encoder, main

    monkeypatch.chdir(tmp_path)
    overrides = ["model/backbone=blip2_tiny", "model.xaligner.num_heads=4"]
    args = ["--folder", str(media), "--model", "blip2", *(f"--override={o}" for o in overrides), "--num-frames", "1", "--num-workers", "0", "--device", "cpu"]
    assert main([*args, "--out", "store"]) == 0
    expected = load_encoder(None, "blip2", overrides, REPO / "conf").target_identity
    assert EmbeddingStore.open(tmp_path / "store", expected_identity=expected).ids


def test_converted_folder_files_follow_the_umask(tmp_path):
    """Every file of a model folder gets the mode of any new file (0o666 less the umask); safetensors
    alone would write model.safetensors owner-only."""
    from covr.tools.convert_checkpoint import main as convert

    _tiny_checkpoint(tmp_path / "tiny.ckpt")
    previous = os.umask(0o002)  # group-writable, as on shared cluster folders
    try:
        assert convert([str(tmp_path / "tiny.ckpt"), str(tmp_path / "folder")]) == 0
    finally:
        os.umask(previous)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "folder").iterdir()}
    assert "model.safetensors" in modes and set(modes.values()) == {0o664}, modes
