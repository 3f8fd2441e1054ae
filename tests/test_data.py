"""Manifest parsing, every bad-data error, SpeechDataset items and DataLoader batches."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from utils.core.audio import SAMPLE_RATE, save_wav
from utils.data.collator import SpeechSeq2SeqCollator
from utils.data.dataset import SpeechDataset
from utils.data.labels import decode_labels
from utils.data.manifest import DataError, load_manifest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def processor(whisper_base_dir):
    from transformers import WhisperProcessor

    return WhisperProcessor.from_pretrained(whisper_base_dir)


def tone(seconds: float, rate: int = SAMPLE_RATE, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


@pytest.fixture()
def clips(tmp_path):
    """A few clips in different formats, rates and channel counts."""
    folder = tmp_path / "audio"
    folder.mkdir()
    save_wav(folder / "two.wav", tone(2.0))
    soundfile.write(folder / "stereo44k.flac", tone(3.0, rate=44100, channels=2), 44100)
    soundfile.write(folder / "eight.ogg", tone(1.5, rate=8000), 8000)
    save_wav(folder / "long.wav", tone(10.0))
    save_wav(folder / "blip.wav", tone(0.2))
    (folder / "notaudio.wav").write_text("this is not audio\n")
    return folder


def write_manifest(path: Path, rows) -> Path:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(row if isinstance(row, str) else json.dumps(row, ensure_ascii=False))
            handle.write("\n")
    return path


def good_rows(folder: Path):
    return [
        {"audio": {"path": str(folder / "two.wav")}, "sentence": "hello there", "language": "English",
         "sentences": [{"start": 0.1, "end": 1.9, "text": "hello there"}], "duration": 2.0},
        {"audio": {"path": "audio/stereo44k.flac"}, "sentence": "你好世界", "language": "Chinese",
         "sentences": [{"start": 0.0, "end": 1.0, "text": "你好"}, {"start": 1.2, "end": 2.96, "text": "世界"}]},
        {"audio": {"path": "audio/long.wav", "start_time": 2.0, "end_time": 5.5}, "sentence": "",
         "sentences": []},
        {"audio": {"path": "audio/eight.ogg"}, "sentence": "eight kilohertz"},
    ]


def test_manifest_columns_and_values(tmp_path, clips):
    manifest = write_manifest(tmp_path / "train.jsonl", good_rows(clips) + [""])
    data = load_manifest(manifest, cache_dir=str(tmp_path / "cache"))
    assert len(data) == 4
    assert set(data.column_names) == {"path", "start_time", "end_time", "sentence", "sentences", "language",
                                      "duration", "line"}
    rows = data.to_list()
    # Relative paths are resolved beside the manifest.
    assert rows[1]["path"] == str(clips / "stereo44k.flac")
    assert [r["language"] for r in rows] == ["en", "zh", None, None]
    assert [r["line"] for r in rows] == [1, 2, 3, 4]
    assert rows[1]["duration"] == pytest.approx(3.0)       # from the FLAC header
    assert rows[2]["duration"] == pytest.approx(3.5)       # the slice
    assert (rows[2]["start_time"], rows[2]["end_time"]) == (2.0, 5.5)
    assert rows[2]["sentences"] == [] and rows[3]["sentences"] is None
    assert rows[1]["sentences"][1] == {"start": 1.2, "end": 2.96, "text": "世界"}
    # Arrow-backed and memory-mapped, not a list of Python dicts.
    assert data.cache_files and data.cache_files[0]["filename"].endswith(".arrow")


def test_duration_filter_counts_instead_of_failing(tmp_path, clips, caplog):
    rows = good_rows(clips) + [{"audio": {"path": "audio/blip.wav"}, "sentence": "too short"}]
    manifest = write_manifest(tmp_path / "train.jsonl", rows)
    with caplog.at_level(logging.INFO, logger="utils.data.manifest"):
        data = load_manifest(manifest, min_audio_len=1.0, max_audio_len=3.2, cache_dir=str(tmp_path / "c"))
    assert sorted(data["line"]) == [1, 2, 4]
    assert "3 of 5 lines kept (0 bad, 1 shorter than 1.00 s, 1 longer than 3.20 s)" in caplog.text
    with pytest.raises(ValueError, match="longer than Whisper's 30 s window"):
        load_manifest(manifest, max_audio_len=40)


def test_bad_settings_are_data_errors(tmp_path, clips, processor):
    manifest = write_manifest(tmp_path / "train.jsonl", good_rows(clips))
    with pytest.raises(DataError, match="unknown language 'Elvish'"):
        SpeechDataset(manifest, processor, language="Elvish", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match="max_audio_len .* must be greater than min_audio_len"):
        SpeechDataset(manifest, processor, min_audio_len=5, max_audio_len=2, cache_dir=str(tmp_path / "cache"))
    bad_config = tmp_path / "aug.json"
    bad_config.write_text('[{"type": "speed", "params": {}, "prob": 1}]')
    with pytest.raises(DataError, match=f"{bad_config}: entry 1 \\(speed\\): missing parameter"):
        SpeechDataset(manifest, processor, augment_config_path=str(bad_config), cache_dir=str(tmp_path / "cache"))


def test_changed_manifest_is_read_again(tmp_path, clips):
    manifest = write_manifest(tmp_path / "train.jsonl", good_rows(clips)[:1])
    cache = str(tmp_path / "cache")
    assert load_manifest(manifest, cache_dir=cache)["sentence"] == ["hello there"]
    write_manifest(manifest, good_rows(clips)[:2])
    os.utime(manifest, ns=(os.stat(manifest).st_atime_ns, os.stat(manifest).st_mtime_ns + 10 ** 9))
    assert load_manifest(manifest, cache_dir=cache)["sentence"] == ["hello there", "你好世界"]


BAD_LINES = [
    ('{"audio": {"path": "audio/two.wav"}, "sentence": "x"', "not valid JSON"),
    ('["audio", "sentence"]', "expected a JSON object"),
    ({"sentence": "x"}, "missing field 'audio'"),
    ({"audio": {"start_time": 0}, "sentence": "x"}, "missing field 'audio.path'"),
    ({"audio": {"path": "audio/two.wav"}}, "missing field 'sentence'"),
    ({"audio": {"path": "audio/two.wav"}, "sentence": 42}, "'sentence' must be a string"),
    ({"audio": {"path": "audio/missing.wav"}, "sentence": "x"}, "audio file not found: audio/missing.wav"),
    ({"audio": {"path": "audio/notaudio.wav"}, "sentence": "x"}, "not a readable audio file"),
    ({"audio": {"path": "audio/two.wav", "start_time": 1.0, "end_time": 0.5}, "sentence": "x"},
     "end_time 0.5 is not after"),
    ({"audio": {"path": "audio/two.wav", "start_time": 0.5, "end_time": 4.0}, "sentence": "x"},
     "end_time 4.0 is past the end"),
    ({"audio": {"path": "audio/two.wav"}, "sentence": "x", "sentences": [{"start": 1.5, "end": 1.0, "text": "x"}]},
     r"sentences\[1\]: impossible timestamp: end 1.0 is not after start 1.5"),
    ({"audio": {"path": "audio/two.wav"}, "sentence": "x", "sentences": [{"start": 0.5, "end": 2.6, "text": "x"}]},
     "end 2.6 is beyond the end of the clip"),
    ({"audio": {"path": "audio/long.wav", "start_time": 1, "end_time": 3}, "sentence": "x",
      "sentences": [{"start": 0.0, "end": 2.5, "text": "x"}]}, "beyond the end of the clip"),
    ({"audio": {"path": "audio/two.wav"}, "sentence": "x", "sentences": [{"start": -1, "end": 1, "text": "x"}]},
     "negative"),
    ({"audio": {"path": "audio/two.wav"}, "sentence": "a b",
      "sentences": [{"start": 1.0, "end": 1.5, "text": "b"}, {"start": 0.0, "end": 0.5, "text": "a"}]},
     "time order"),
    ({"audio": {"path": "audio/two.wav"}, "sentence": "x", "sentences": [{"start": 0, "end": 1}]},
     r"sentences\[1\] must be an object with 'start', 'end', 'text'"),
    ({"audio": {"path": "audio/two.wav"}, "sentence": "", "sentences": [{"start": 0, "end": 1, "text": "hi"}]},
     "'sentence' is empty"),
    ({"audio": {"path": "audio/two.wav"}, "sentence": "x", "language": "Klingon"}, "unknown language 'Klingon'"),
    ({"audio": {"path": "audio/two.wav"}, "sentence": "x", "duration": -3}, "'duration' must be a positive"),
]


@pytest.mark.parametrize("bad, message", BAD_LINES, ids=[m for _, m in BAD_LINES])
def test_bad_line_stops_with_file_and_line(tmp_path, clips, bad, message):
    rows = good_rows(clips)
    rows.insert(2, bad)
    manifest = write_manifest(tmp_path / "train.jsonl", rows)
    with pytest.raises(DataError, match=message) as info:
        load_manifest(manifest, cache_dir=str(tmp_path / "cache"))
    assert str(info.value).startswith(f"{manifest}:3: ")
    assert "\n" not in str(info.value)


def test_skip_bad_skips_and_counts(tmp_path, clips, caplog):
    rows = good_rows(clips)
    rows.insert(1, "{broken")
    rows.insert(3, {"audio": {"path": "audio/missing.wav"}, "sentence": "x"})
    manifest = write_manifest(tmp_path / "train.jsonl", rows)
    with pytest.raises(DataError, match=f"^{manifest}:2: not valid JSON"):
        load_manifest(manifest, cache_dir=str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING, logger="utils.data.manifest"):
        data = load_manifest(manifest, skip_bad=True, cache_dir=str(tmp_path / "cache"))
    assert data["line"] == [1, 3, 5, 6]
    assert "skipped 2 bad line(s) of 6" in caplog.text and f"{manifest}:2: not valid JSON" in caplog.text
    # The counts are reported again when the result comes from the cache.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="utils.data.manifest"):
        load_manifest(manifest, skip_bad=True, cache_dir=str(tmp_path / "cache"))
    assert "skipped 2 bad line(s) of 6" in caplog.text


def test_encoding_bom_and_check_audio_off(tmp_path, clips):
    manifest = tmp_path / "train.jsonl"
    rows = [json.dumps(r, ensure_ascii=False).encode() for r in good_rows(clips)]
    # A byte-order mark (Windows editors) is fine; a line that is not UTF-8 is not.
    manifest.write_bytes(b"\xef\xbb\xbf" + rows[0] + b"\n" + rows[1] + b"\n" + b'{"sentence": "\xff"}\n')
    with pytest.raises(DataError, match=f"{manifest}:3: not UTF-8 text"):
        load_manifest(manifest, cache_dir=str(tmp_path / "cache"))
    # Without check_audio, a line with its duration does not touch the audio at all.
    lazy = write_manifest(tmp_path / "lazy.jsonl", [{"audio": {"path": "audio/later.wav"}, "sentence": "x",
                                                     "duration": 2.0}])
    data = load_manifest(lazy, check_audio=False, cache_dir=str(tmp_path / "cache"))
    assert data["duration"] == [2.0] and data["path"] == ["audio/later.wav"]
    with pytest.raises(DataError, match=f"{lazy}:1: audio file not found"):
        load_manifest(lazy, cache_dir=str(tmp_path / "cache"))


def test_missing_or_empty_manifest(tmp_path, clips):
    with pytest.raises(DataError, match="manifest file not found"):
        load_manifest(tmp_path / "nope.jsonl")
    manifest = write_manifest(tmp_path / "short.jsonl", [{"audio": {"path": "audio/blip.wav"}, "sentence": "x"}])
    with pytest.raises(DataError, match="no usable samples .*1 shorter than 0.5 s"):
        load_manifest(manifest, cache_dir=str(tmp_path / "cache"))


def test_items_labels_and_languages(tmp_path, clips, processor):
    manifest = write_manifest(tmp_path / "train.jsonl", good_rows(clips))
    tok = processor.tokenizer
    ds = SpeechDataset(manifest, processor, language="French", cache_dir=str(tmp_path / "cache"))
    assert len(ds) == 4
    assert ds.stats == {"lines": 4, "kept": 4, "bad": 0, "too_short": 0, "too_long": 0, "too_many_tokens": 0}
    item = ds[1]
    assert item["input_features"].shape == (80, 3000) and item["input_features"].dtype == np.float32
    # The per-sample language wins over the dataset's; the dataset's fills the gaps.
    assert decode_labels(tok, ds[0]["labels"])[:4] == ["<|startoftranscript|>", "<|en|>", "<|transcribe|>",
                                                       "<|notimestamps|>"]
    assert tok.decode(item["labels"][4:-1]) == "你好世界"
    assert decode_labels(tok, ds[3]["labels"])[:2] == ["<|startoftranscript|>", "<|fr|>"]
    # The no-speech clip is kept, with the no-speech label.
    assert decode_labels(tok, ds[2]["labels"]) == ["<|startoftranscript|>", "<|nospeech|>", "<|endoftext|>"]
    plain = SpeechDataset(manifest, processor, cache_dir=str(tmp_path / "cache"))
    assert decode_labels(tok, plain[3]["labels"])[:3] == ["<|startoftranscript|>", "<|transcribe|>",
                                                          "<|notimestamps|>"]
    # Features are those of the decoded 16 kHz mono clip (the 44.1 kHz stereo FLAC here).
    audio = soundfile.read(clips / "stereo44k.flac")[0].mean(axis=1)
    import soxr
    expected = processor.feature_extractor(soxr.resample(audio, 44100, SAMPLE_RATE).astype(np.float32),
                                           sampling_rate=SAMPLE_RATE, return_tensors="np").input_features[0]
    np.testing.assert_allclose(item["input_features"], expected, atol=1e-4)

    # --max_eval_samples: the first N samples, still a SpeechDataset (the encoder cache keys on its rows).
    first = ds.head(2)
    assert isinstance(first, SpeechDataset) and len(first) == 2 and len(ds) == 4
    assert [first.labels(i) for i in range(2)] == [ds.labels(i) for i in range(2)]
    assert first.stats["kept"] == 2 and first.data["path"] == ds.data["path"][:2]
    assert ds.head(10) is ds


def test_timestamp_dataset(tmp_path, clips, processor):
    tok = processor.tokenizer
    manifest = write_manifest(tmp_path / "train.jsonl", good_rows(clips))
    with pytest.raises(DataError, match=f"{manifest}:4: timestamp training needs 'sentences'"):
        SpeechDataset(manifest, processor, timestamps=True, cache_dir=str(tmp_path / "cache"))
    ds = SpeechDataset(manifest, processor, timestamps=True, skip_bad=True, cache_dir=str(tmp_path / "cache"))
    assert len(ds) == 3 and ds.stats["bad"] == 1
    labels = decode_labels(tok, ds[1]["labels"])
    assert labels[:4] == ["<|startoftranscript|>", "<|zh|>", "<|transcribe|>", "<|0.00|>"]
    assert labels.count("<|1.00|>") == 1 and labels[-2:] == ["<|2.96|>", "<|endoftext|>"]
    assert decode_labels(tok, ds[2]["labels"])[-2:] == ["<|nospeech|>", "<|endoftext|>"]


def test_english_only_model_rejects_other_languages(tmp_path, clips, whisper_tiny_en_dir):
    from transformers import WhisperProcessor

    processor_en = WhisperProcessor.from_pretrained(whisper_tiny_en_dir)
    manifest = write_manifest(tmp_path / "train.jsonl", good_rows(clips))
    with pytest.raises(DataError, match=f"{manifest}:2: field 'language': an English-only model"):
        SpeechDataset(manifest, processor_en, cache_dir=str(tmp_path / "cache"))


def test_long_labels_are_left_out(tmp_path, clips, processor):
    rows = good_rows(clips)
    rows[3]["sentence"] = "word " * 60
    manifest = write_manifest(tmp_path / "train.jsonl", rows)
    ds = SpeechDataset(manifest, processor, max_label_length=40, cache_dir=str(tmp_path / "cache"))
    assert sorted(ds.data["line"]) == [1, 2, 3] and ds.stats["too_many_tokens"] == 1


def test_audio_lost_after_loading_is_an_error_not_a_substitute(tmp_path, clips, processor):
    manifest = write_manifest(tmp_path / "train.jsonl", good_rows(clips))
    ds = SpeechDataset(manifest, processor, cache_dir=str(tmp_path / "cache"))
    (clips / "eight.ogg").write_bytes(b"garbage")
    with pytest.raises(DataError, match=f"{manifest}:4: .*eight.ogg: not a readable audio file"):
        ds[3]
    # Raised in a DataLoader worker, it reaches the main process as the same one sentence.
    collator = SpeechSeq2SeqCollator(processor, processor.tokenizer.convert_tokens_to_ids("<|startoftranscript|>"))
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=1, collate_fn=collator)
    with pytest.raises(DataError) as info:
        next(iter(loader))
    assert str(info.value).startswith(f"{manifest}:4: ") and "Traceback" not in str(info.value)
    assert "\n" not in str(info.value)


def test_dataloader_with_two_workers_and_augmentation(tmp_path, clips, processor):
    manifest = write_manifest(tmp_path / "train.jsonl", good_rows(clips))
    config = tmp_path / "aug.json"
    config.write_text(json.dumps([{"type": "speed", "params": {"min_speed_rate": 1.25, "max_speed_rate": 1.25},
                                   "prob": 1.0},
                                  {"type": "volume", "params": {"min_gain_dBFS": -10, "max_gain_dBFS": 10},
                                   "prob": 1.0}]))
    tok = processor.tokenizer
    ds = SpeechDataset(manifest, processor, timestamps=True, skip_bad=True, augment_config_path=str(config),
                       cache_dir=str(tmp_path / "cache"))
    # Speed 1.25 moves every timestamp to 0.8 of its place, token by token.
    labels = decode_labels(tok, ds[1]["labels"])
    assert [t for t in labels if t.startswith("<|") and t[2].isdigit()] == \
        ["<|0.00|>", "<|0.80|>", "<|0.96|>", "<|2.36|>"]
    sot = tok.convert_tokens_to_ids("<|startoftranscript|>")
    collator = SpeechSeq2SeqCollator(processor, sot)

    def batches(seed):
        torch.manual_seed(seed)
        loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collator)
        return list(loader)

    first, again, other = batches(7), batches(7), batches(8)
    assert [b["input_features"].shape for b in first] == [(2, 80, 3000), (1, 80, 3000)]
    expected = [ds[i]["labels"][1:] for i in range(3)]
    got = [row[row != -100].tolist() for b in first for row in b["labels"]]
    assert got == expected
    # Same torch seed, same augmentation in the workers; another seed, other volume gains.
    for a, b in zip(first, again):
        assert torch.equal(a["input_features"], b["input_features"])
    assert not torch.equal(first[0]["input_features"], other[0]["input_features"])


def test_shipped_sample_corpus_loads(tmp_path, processor, monkeypatch):
    monkeypatch.chdir(tmp_path)     # its paths are relative to the repository, found from anywhere
    ds = SpeechDataset(REPO / "dataset" / "en_test.jsonl", processor, timestamps=True,
                       cache_dir=str(tmp_path / "cache"))
    assert len(ds) == 20
    labels = decode_labels(processor.tokenizer, ds[0]["labels"])
    assert labels[:5] == ["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|0.38|>", "ĠThe"]
    assert ds.data[0]["path"] == str(REPO / "dataset" / "audio" / "en_test_0001.flac")
