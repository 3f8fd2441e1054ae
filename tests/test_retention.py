"""Retention: the language-token loss mask, replay mixing, the retention sets of evaluation.py and of
finetune.py's evaluations (utils.training.retention, utils.core.lid)."""
from __future__ import annotations

import json

import pytest
from training_fixtures import REPO, finetune_args, make_corpus, python, run_script

import evaluation
from utils.core.errors import UsageError


@pytest.fixture(scope="module")
def processor(whisper_base_dir):
    from utils.core.models import load_processor

    return load_processor(str(whisper_base_dir), local_files_only=True)


def _en_clips(tmp_path, count: int, language="English"):
    """English lines over the corpus's tone clips (what a replay or retention manifest looks like)."""
    train, _ = make_corpus(tmp_path / "en", n_train=count, n_test=2)
    lines = [json.loads(x) for x in train.read_text(encoding="utf-8").splitlines()]
    for i, line in enumerate(lines):
        line.update(sentence=f"The tone number {i}.", language=language)
    path = tmp_path / "en.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return path


def test_collator_leaves_out_the_language_token_and_with_task_the_task_token(processor):
    from utils.data.collator import IGNORE_INDEX, SpeechSeq2SeqCollator
    from utils.data.labels import build_labels, special_ids
    from utils.training.retention import prompt_loss_mask_ids

    tokenizer = processor.tokenizer
    ids = special_ids(tokenizer)
    speech = build_labels(tokenizer, sentence="你好", sentences=None, language="zh", task="transcribe",
                          timestamps=False)
    silent = build_labels(tokenizer, sentence="", sentences=[], language="zh", task="transcribe", timestamps=False)
    features = [{"input_features": [[0.0]], "labels": speech}, {"input_features": [[0.0]], "labels": silent}]
    zh = tokenizer.convert_tokens_to_ids("<|zh|>")

    def collate(**mask):
        ignore = prompt_loss_mask_ids(tokenizer, **mask) if mask else frozenset()
        return SpeechSeq2SeqCollator(processor, ids.sot, ignore)(features)["labels"].tolist()

    plain = collate()
    assert plain[0][:3] == [zh, ids.transcribe, ids.notimestamps] and plain[1][:2] == [ids.nospeech, ids.eot]
    language_only = collate(language=True, task=False)
    assert language_only[0] == [IGNORE_INDEX] + plain[0][1:]
    # <|nospeech|> stands where the language token would and stays trained: the no-speech rule reads it.
    assert language_only[1] == plain[1]
    both = collate(language=True, task=True)
    assert both[0] == [IGNORE_INDEX, IGNORE_INDEX] + plain[0][2:] and both[1] == plain[1]


def test_replay_mixes_its_share_of_clips_and_needs_languages(processor, tmp_path):
    from utils.data.dataset import SpeechDataset
    from utils.training.retention import mix_replay

    train_path, _ = make_corpus(tmp_path / "zh", n_train=18, n_test=2)
    train = SpeechDataset(train_path, processor, language="Chinese")
    replay = SpeechDataset(_en_clips(tmp_path, 5), processor)

    mixed, count = mix_replay(train, replay, 0.1, seed=1)
    assert count == 2 and len(mixed) == 20 and len(train) == 18
    assert list(mixed.data["language"]).count("en") == 2 and list(mixed.data["language"])[:18] == ["zh"] * 18
    assert mixed[19]["labels"][1] == processor.tokenizer.convert_tokens_to_ids("<|en|>")

    # More replay than the manifest holds: every clip is drawn before any is drawn again.
    mixed, count = mix_replay(train, replay, 0.5, seed=1)
    sentences = list(mixed.data["sentence"])[18:]
    assert count == 18 and len(mixed) == 36
    assert sorted(sentences.count(s) for s in set(sentences)) == [3, 3, 4, 4, 4]
    assert mix_replay(train, replay, 0.0)[1] == 0

    unlabelled = SpeechDataset(_en_clips(tmp_path / "x", 3, language=None), processor, language=None)
    with pytest.raises(UsageError, match=r"--replay_data: .*en.jsonl:1 has no 'language'"):
        mix_replay(train, unlabelled, 0.1)


def test_language_token_loss_auto_is_left_out_for_one_language_and_trained_for_several(processor, tmp_path):
    from utils.data.dataset import SpeechDataset
    from utils.training.retention import lang_token_masked, mix_replay

    train_path, _ = make_corpus(tmp_path / "zh", n_train=9, n_test=1)
    train = SpeechDataset(train_path, processor, language="Chinese")
    masked, why = lang_token_masked("auto", False, train, "Chinese")
    assert masked is True and why.startswith("no loss: every training clip is zh")
    # Lines without their own language count as --language's.
    bare = tmp_path / "bare.jsonl"
    bare.write_text("".join(json.dumps({k: v for k, v in json.loads(line).items() if k != "language"}) + "\n"
                            for line in open(train_path, encoding="utf-8")), encoding="utf-8")
    assert lang_token_masked("auto", False, SpeechDataset(bare, processor, language="Chinese"), "Chinese")[0] is True
    mixed, _ = mix_replay(train, SpeechDataset(_en_clips(tmp_path, 3), processor), 0.1, seed=1)
    masked, why = lang_token_masked("auto", False, mixed, "Chinese")
    assert masked is False and "2 languages: en, zh (" in why
    # Explicit choices win; the task token's mask takes the language token's with it.
    assert lang_token_masked("true", False, mixed, "Chinese")[0] is True
    assert lang_token_masked("false", False, train, "Chinese")[0] is False
    assert lang_token_masked("auto", True, mixed, "Chinese")[0] is True


def test_evaluation_scores_the_retention_set_with_its_metric_and_language_id(whisper_base_dir, tmp_path, capsys):
    def manifest(name, source, count):
        lines = (REPO / "dataset" / source).read_text(encoding="utf-8").splitlines()[:count]
        rows = [json.loads(x) for x in lines]
        for row in rows:
            row["audio"]["path"] = str(REPO / row["audio"]["path"])
        path = tmp_path / name
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        return path

    zh, en = manifest("zh_part.jsonl", "zh_test.jsonl", 2), manifest("en_part.jsonl", "en_test.jsonl", 2)
    report_path = tmp_path / "report.json"
    code = evaluation.main([f"--model_path={whisper_base_dir}", f"--test_data={zh}", "--retention_data", str(en),
                            "--batch_size=2", "--num_workers=0", "--max_new_tokens=12", "--local_files_only=True",
                            f"--output_file={report_path}"])
    out = capsys.readouterr().out
    assert code == 0
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["metric"] == "cer" and report["normalizer"] == "punctuation-simplified"
    assert report["language_identification"]["correct"] == report["language_identification"]["clips"] == 2
    [kept] = report["retention"]
    assert kept["test_data"] == str(en) and kept["metric"] == "wer" and kept["normalizer"] == "whisper-english"
    assert kept["language_identification"]["accuracy"] == 1.0
    assert 0.5 < kept["language_identification"]["mean_reference_probability"] <= 1.0
    assert [u["detected_language"] for u in kept["utterances"]] == ["en", "en"]
    summary = [line for line in out.splitlines() if line.startswith(("CER:", "WER:"))]
    assert summary[0].startswith("CER:") and "LID accuracy 1.000 (2/2" in summary[0] and str(zh) in summary[0]
    assert summary[1].startswith(f"WER: {kept['value']:.4f} over 2 clips") and "LID accuracy 1.000" in summary[1]

    unlabelled = tmp_path / "nolang.jsonl"
    unlabelled.write_text(json.dumps({"audio": {"path": "a.wav"}, "sentence": "x"}) + "\n", encoding="utf-8")
    assert evaluation.main([f"--model_path={whisper_base_dir}", f"--test_data={zh}", "--retention_data",
                            str(unlabelled), "--local_files_only=True"]) == 2
    assert f"--retention_data: {unlabelled}:1 has no 'language'" in capsys.readouterr().err


def test_finetune_logs_retention_sets_at_every_evaluation(tiny_whisper_dir, tmp_path):
    train, test = make_corpus(tmp_path / "zh", n_train=4, n_test=2)
    en = _en_clips(tmp_path, 3)
    out = tmp_path / "run"
    result = run_script([python(), "finetune.py",
                         *finetune_args(tiny_whisper_dir, train, test, out, report_to="none", max_steps=2,
                                        eval_steps=1, save_steps=1,
                                        replay_data=en, replay_ratio=0.2),
                         "--retention_data", str(en)], timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "replay: 1 clips from" in result.stdout
    assert "language token: trained: the training clips are in 2 languages: en, zh" in result.stdout
    assert "evaluation during training: CER with evaluation.py's normaliser punctuation-simplified" in result.stdout
    state = json.loads((out / tiny_whisper_dir.name / "checkpoint-final" / "trainer_state.json").read_text())
    logged = [row for row in state["log_history"] if "eval_retention/en/wer" in row]
    assert [row["step"] for row in logged] == [1, 2]
    assert all(0 <= row["eval_retention/en/lid_acc"] <= 1 for row in logged)
    assert all(row["eval_retention/en/wer"] >= 0 for row in logged)
