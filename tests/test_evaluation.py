"""evaluation.py: batched decoding meets the right references; the report and the printed metric agree."""
from __future__ import annotations

import json

import pytest
import torch
from training_fixtures import REPO, make_corpus

import evaluation
from utils.core.metrics import error_rate


def _run(capsys, *argv):
    """Exit status, stdout and last stderr line; a flag mistake ends in parse_args' SystemExit(2)."""
    try:
        code = evaluation.main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, (out.err.strip().splitlines() or [""])[-1]


def test_report_holds_every_clip_in_order_and_the_metric(tiny_whisper_dir, tmp_path, capsys):
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

    from utils.core.audio import load_audio

    _, test = make_corpus(tmp_path, n_train=1, n_test=3)
    report_path = tmp_path / "report" / "cer.json"
    code, out, err = _run(capsys, f"--model_path={tiny_whisper_dir}", f"--test_data={test}", "--batch_size=2",
                          "--num_workers=0", "--max_new_tokens=3", f"--output_file={report_path}")
    assert code == 0, err
    report = json.loads(report_path.read_text(encoding="utf-8"))
    lines = [json.loads(x) for x in test.read_text(encoding="utf-8").splitlines()]
    assert [u["reference"] for u in report["utterances"]] == [x["sentence"] for x in lines]
    assert report["counts"]["utterances"] == 3 and report["counts"]["no_speech_references"] == 1
    assert report["metric"] == "cer" and f"CER: {report['value']:.4f} over 3 clips" in out

    # Each clip decoded alone gives the hypothesis the batch put at its index.
    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir).eval()
    extractor = WhisperFeatureExtractor.from_pretrained(tiny_whisper_dir)
    tokenizer = WhisperTokenizer.from_pretrained(tiny_whisper_dir)
    for line, utterance in zip(lines, report["utterances"]):
        features = extractor(load_audio(line["audio"]["path"]), sampling_rate=16000,
                             return_tensors="pt").input_features
        with torch.no_grad():
            tokens = model.generate(features, language="zh", task="transcribe", max_new_tokens=3)
        assert utterance["hypothesis"] == tokenizer.decode(tokens[0], skip_special_tokens=True).strip()
    again = error_rate([u["reference"] for u in report["utterances"]],
                       [u["hypothesis"] for u in report["utterances"]], "cer")
    assert report["value"] == pytest.approx(again.value)
    assert report["counts"]["errors"] == again.counts.errors > 0


def test_real_english_model_has_low_wer(whisper_tiny_en_dir, tmp_path, capsys):
    lines = (REPO / "dataset" / "en_test.jsonl").read_text(encoding="utf-8").splitlines()[:6]
    manifest = tmp_path / "en.jsonl"
    manifest.write_text("".join(
        json.dumps({**json.loads(x), "audio": {"path": str(REPO / json.loads(x)["audio"]["path"])}}) + "\n"
        for x in lines), encoding="utf-8")
    report_path = tmp_path / "wer.json"
    code, out, err = _run(capsys, f"--model_path={whisper_tiny_en_dir}", f"--test_data={manifest}",
                          "--metric=wer", "--batch_size=6", "--num_workers=0", "--language=None",
                          f"--output_file={report_path}")
    assert code == 0, err
    report = json.loads(report_path.read_text())
    assert report["counts"]["reference_units"] > 40
    # Whisper's English normaliser, as published WERs: "twenty" and "20" are the same word.
    assert report["normalizer"] == "whisper-english" and "normalizer whisper-english" in out
    assert report["utterances"][0]["reference_normalized"] == "the train to the airport leaves every 20 minutes"
    # espeak-ng English is clear speech; tiny.en gets most words right (measured: see docs/training.md).
    assert report["value"] < 0.25, [(u["reference"], u["hypothesis"]) for u in report["utterances"]]


def test_bad_flags_are_one_sentence(tiny_whisper_dir, tmp_path, capsys):
    _, test = make_corpus(tmp_path, n_train=1, n_test=2)
    base = [f"--model_path={tiny_whisper_dir}", f"--test_data={test}", "--num_workers=0"]
    code, _, err = _run(capsys, *base, "--metric=ser")
    assert code == 2 and err.startswith("error: ") and "--metric must be one of cer, wer, got 'ser'" in err, err
    code, _, err = _run(capsys, *base, "--batch_size=0")
    assert code == 2 and "--batch_size must be at least 1, got 0" in err, err
    assert _run(capsys, f"--model_path={tiny_whisper_dir}", f"--test_data={tmp_path / 'x.jsonl'}")[:3:2] == \
        (2, f"error: --test_data: {tmp_path / 'x.jsonl'} not found")
    code, _, err = _run(capsys, *base, "--language=Klingon")
    assert code == 2 and "--language: unknown language 'Klingon'" in err
    code, _, err = _run(capsys, f"--model_path={tmp_path / 'nomodel'}", f"--test_data={test}")
    assert code == 2 and "model folder not found" in err
    assert not list(tmp_path.glob("*.json"))


@pytest.mark.slow
def test_clips_without_speech_get_an_empty_transcript_by_whispers_no_speech_rule(whisper_base_dir, tmp_path, capsys):
    rows = [json.loads(x) for x in (REPO / "dataset" / "zh_test.jsonl").read_text(encoding="utf-8").splitlines()]
    chosen = [r for r in rows if r["sentence"]][:2] + [r for r in rows if not r["sentence"]]
    manifest = tmp_path / "zh.jsonl"
    manifest.write_text("".join(json.dumps({**r, "audio": {"path": str(REPO / r["audio"]["path"])}}) + "\n"
                                for r in chosen), encoding="utf-8")
    reports = {}
    for threshold in (0.6, 0):
        path = tmp_path / f"cer-{threshold}.json"
        code, out, err = _run(capsys, f"--model_path={whisper_base_dir}", f"--test_data={manifest}",
                              "--batch_size=4", "--num_workers=0", "--max_new_tokens=40",
                              f"--no_speech_threshold={threshold}", f"--output_file={path}")
        assert code == 0, err
        reports[threshold] = json.loads(path.read_text())
    silent = [u for u in reports[0.6]["utterances"] if not u["reference"]]
    assert len(silent) == 2 and all(u["hypothesis"] == "" for u in silent)
    assert reports[0.6]["counts"]["no_speech_hypotheses"] >= 2
    assert all(u["hypothesis"] for u in reports[0.6]["utterances"][:2])     # speech is still transcribed
    # Forced to decode Chinese, the same model invents text for the silent clips: the rule is what empties them.
    assert reports[0]["counts"]["no_speech_hypotheses"] == 0
    assert any(u["hypothesis"] for u in reports[0]["utterances"] if not u["reference"])
    assert reports[0.6]["value"] < reports[0]["value"]
