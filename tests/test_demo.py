"""tools/demo.py end to end on a small real model (whisper-tiny.en) and a handful of English clips: every
stage runs for real (evaluation, fine-tuning with the encoder cache, merge, CTranslate2 + infer_ct2.py,
GGML + whisper.cpp) and the final table reports what they produced."""
from __future__ import annotations

import json
import re

import pytest
from training_fixtures import REPO, python, run_script


@pytest.fixture(scope="module")
def english_clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo-data")
    lines = (REPO / "dataset" / "en_test.jsonl").read_text(encoding="utf-8").splitlines()
    (root / "train.jsonl").write_text("\n".join(lines[:4]) + "\n", encoding="utf-8")
    (root / "test.jsonl").write_text("\n".join(lines[4:6]) + "\n", encoding="utf-8")
    (root / "kept.jsonl").write_text("\n".join(lines[6:8]) + "\n", encoding="utf-8")
    clip = json.loads(lines[0])
    (root / "ref.txt").write_text(clip["sentence"] + "\n", encoding="utf-8")
    return root, REPO / clip["audio"]["path"]


@pytest.mark.slow
def test_demo_runs_every_stage_and_reports_them(whisper_tiny_en_dir, english_clips, tmp_path):
    root, audio = english_clips
    out = tmp_path / "demo"
    res = run_script([python(), "tools/demo.py", f"--base_model={whisper_tiny_en_dir}",
                      f"--train_data={root / 'train.jsonl'}", f"--test_data={root / 'test.jsonl'}",
                      f"--audio={audio}", f"--reference={root / 'ref.txt'}", "--language=English",
                      "--audio_language=English", "--epochs=1", "--batch_size=2", "--eval_batch_size=2",
                      "--max_new_tokens=40", "--num_workers=0", f"--retention_data={root / 'kept.jsonl'}",
                      f"--output_dir={out}"], timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    stdout = res.stdout

    before = json.loads((out / "cer_before.json").read_text(encoding="utf-8"))
    after = json.loads((out / "cer_after.json").read_text(encoding="utf-8"))
    assert before["counts"]["utterances"] == after["counts"]["utterances"] == 2
    assert before["value"] < 0.3      # the real model reads clear English; the report holds its texts
    assert re.search(rf"demo: CER {before['value']:.3f} -> {after['value']:.3f} in [0-9.]+ min", stdout), stdout
    # The retention set was scored by both evaluations, with its own metric, and the table says so.
    kept_before, kept_after = before["retention"][0], after["retention"][0]
    assert kept_before["metric"] == "wer" and kept_before["counts"]["utterances"] == 2
    assert kept_before["value"] < 0.3
    assert (f"kept on {root / 'kept.jsonl'} (not trained on): WER {kept_before['value']:.3f} -> "
            f"{kept_after['value']:.3f}") in stdout, stdout
    # Training used the stored encoder outputs (two steps of two clips, one epoch).
    results = json.loads((out / "runs" / "whisper-tiny.en" / "train_results.json").read_text())
    assert results["encoder_cache"] is True and results["global_step"] == 2
    assert re.search(r"2 steps, 4 clips of .* x 1 epochs, (bf16|fp32), loss [0-9.]+", stdout), stdout
    # Every artefact the table names exists and is what it claims to be.
    merged = out / "models" / "whisper-tiny.en-finetune"
    assert (merged / "model.safetensors").is_file() and (merged / "preprocessor_config.json").is_file()
    assert (out / "models" / "whisper-tiny.en-finetune-ct2" / "model.bin").is_file()
    assert (out / "models" / "ggml-whisper-tiny.en-finetune.bin").read_bytes()[:4] == b"lmgg"   # GGML magic
    for stage in ("CER before (base model)", "LoRA fine-tuning", "merge", "CER after (fine-tuned)",
                  "CTranslate2 + infer_ct2.py", "GGML + whisper.cpp"):
        assert re.search(rf"\| {re.escape(stage)}\s+\|\s+\d+s \| {re.escape(str(out))}", stdout), stage
    # Both engines transcribed the file with the fine-tuned weights and were scored against the reference.
    for engine, folder in (("CTranslate2", "ct2"), ("GGML", "ggml")):
        text = (out / folder / f"{audio.stem}.txt").read_text(encoding="utf-8").strip()
        assert text.lower().startswith("the train to") and "minutes" in text.lower(), (engine, text)
        cer = float(re.search(rf"^{engine} on .*\(WER ([0-9.]+) against", stdout, re.M).group(1))
        assert cer < 0.6, (engine, cer)      # tiny.en after two steps: "twenty" may come out as "20"
    # It ends with the two test clips' reference, base and fine-tuned text, each under the other.
    shown = stdout[stdout.index("test clips with speech, reference / base / fine-tuned:"):]
    for b, a in zip(before["utterances"], after["utterances"]):
        assert f"  reference   {b['reference']}\n  base        {b['hypothesis']}" in shown
    assert "environment: " in stdout and "model: " in stdout and "reused" in stdout


def test_bad_flags_are_one_sentence(tmp_path):
    res = run_script([python(), "tools/demo.py", f"--base_model={tmp_path}"])
    assert res.returncode == 2 and "is not a model folder; run `make models`" in res.stderr
    assert "Traceback" not in res.stderr
    res = run_script([python(), "tools/demo.py", "--train_data=nope.jsonl"])
    assert res.returncode == 2 and "--train_data: nope.jsonl not found" in res.stderr
    res = run_script([python(), "tools/demo.py", "--epochs=0"])
    assert res.returncode == 2 and "--epochs must be positive" in res.stderr


def test_side_by_side_shows_reference_base_and_fine_tuned(tmp_path, capsys):
    """The demo's closing lines, from two evaluation reports as evaluation.py writes them: every speech
    clip's three texts one under the other with their own CER, no-speech clips left out."""
    import sys

    sys.path.insert(0, str(REPO / "tools"))
    import demo

    from utils.core.metrics import error_rate

    references = ["会议定在九月十五号。", "", "我每个周末打扫卫生。", "这个房间很大。"]
    before = error_rate(references, ["会议定在九月十五号上午", "", "我每個周末打掃衛生。", "这个"], "cer").to_dict()
    after = error_rate(references, ["会议定在九月十五号。", "", "我每个周末打扫卫生。", ""], "cer").to_dict()
    manifest = tmp_path / "test.jsonl"
    manifest.write_text("".join(json.dumps({"audio": {"path": f"a/{i}.flac"}, "sentence": r}) + "\n"
                                for i, r in enumerate(references)), encoding="utf-8")
    lines = demo.side_by_side(before, after, 2, demo.manifest_audio(str(manifest)))
    assert lines == [
        "clip 1 a/0.flac",
        "  reference   会议定在九月十五号。",
        "  base        会议定在九月十五号上午   [CER 0.22]",
        "  fine-tuned  会议定在九月十五号。   [CER 0.00]",
        "clip 2 a/2.flac",
        "  reference   我每个周末打扫卫生。",
        "  base        我每個周末打掃衛生。   [CER 0.00]",   # scored after traditional -> simplified
        "  fine-tuned  我每个周末打扫卫生。   [CER 0.00]",
    ]
    last = demo.side_by_side(before, after, 9)
    assert last[-4:] == ["clip 3", "  reference   这个房间很大。", "  base        这个   [CER 0.67]",
                         "  fine-tuned  (nothing)   [CER 1.00]"]
    assert demo.side_by_side(before, after, 0) == []
    assert demo.audio_metric("English") == "wer" and demo.audio_metric("zh") == "cer"
