"""tools/create_audiofolder_data.py on miniature audiofolder and LJSpeech folders built here."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tools", "create_audiofolder_data.py")


def write_clip(path, seconds, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    audio = np.random.default_rng(seed).normal(0, 0.05, int(seconds * 22050)).astype("float32")
    soundfile.write(path, audio, 22050)


def run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                          cwd=ROOT)


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_audiofolder_split_durations_and_skips(tmp_path, whisper_base_dir):
    data = tmp_path / "folder"
    texts = {"a.wav": "first clip", "b.flac": "second, with a comma", "sub/c.wav": "third one",
             "d.wav": "fourth", "e.wav": "fifth", "f.wav": "sixth"}
    for index, name in enumerate(texts):
        write_clip(str(data / name), 1.0 + 0.5 * index, index)
    rows = ["file_name,text"] + [f'{name},"{text}"' for name, text in texts.items()]
    rows.append("missing.wav,no audio for this one")
    write_clip(str(data / "long.wav"), 1.0)
    rows.append("long.wav," + " ".join(["word"] * 500))
    (data / "metadata.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")

    result = run(f"--data_dir={data}", f"--output_dir={tmp_path / 'out'}", "--test_size=2",
                 "--language=English", f"--tokenizer={whisper_base_dir}")
    assert result.returncode == 0, result.stderr
    assert "1 missing audio" in result.stdout and "1 texts over 448 tokens" in result.stdout
    train = read_jsonl(tmp_path / "out/train.jsonl")
    test = read_jsonl(tmp_path / "out/test.jsonl")
    # 2 of the 8 metadata rows were held out before the 2 bad rows were left out.
    assert len(train) + len(test) == 6 and 4 <= len(train) <= 6 and len(test) <= 2
    got = {os.path.relpath(r["audio"]["path"], data): r for r in train + test}
    assert {name: r["sentence"] for name, r in got.items()} == texts
    for index, name in enumerate(texts):
        assert got[name]["duration"] == pytest.approx(1.0 + 0.5 * index, abs=0.01)
        assert got[name]["language"] == "English"


def test_presplit_audiofolder_keeps_its_splits(tmp_path):
    data = tmp_path / "folder"
    write_clip(str(data / "train" / "x.wav"), 1.0)
    write_clip(str(data / "train" / "y.wav"), 1.2)
    write_clip(str(data / "test" / "z.wav"), 1.4)
    (data / "train" / "metadata.csv").write_text("file_name,transcription\nx.wav,ex\ny.wav,why\n")
    (data / "test" / "metadata.jsonl").write_text('{"file_name": "z.wav", "transcription": "zed"}\n')
    out = tmp_path / "out"
    result = run(f"--data_dir={data}", f"--output_dir={out}", "--text_column=transcription",
                 "--max_tokens=0")
    assert result.returncode == 0, result.stderr
    assert [r["sentence"] for r in read_jsonl(out / "train.jsonl")] == ["ex", "why"]
    assert [r["sentence"] for r in read_jsonl(out / "test.jsonl")] == ["zed"]

    result = run(f"--data_dir={data}", f"--output_dir={out}", "--text_column=transcription",
                 "--max_tokens=0", "--test_size=0.5")
    assert result.returncode == 2 and "already split into train, test" in result.stderr

    result = run(f"--data_dir={data}", f"--output_dir={tmp_path / 'o2'}", "--max_tokens=0")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "metadata.csv, line 1: header lacks column(s) text" in result.stderr
    assert not (tmp_path / "o2").exists() or not os.listdir(tmp_path / "o2")


def test_ljspeech(tmp_path):
    data = tmp_path / "LJSpeech-1.1"
    lines = ["LJ001-0001|Printing, in 1450, began.|Printing, in fourteen fifty, began.",
             "LJ001-0002|Dr. Smith came.|Doctor Smith came.",
             "LJ001-0003|It was 3 pm.|It was three pm."]
    for index in range(3):
        write_clip(str(data / "wavs" / f"LJ001-000{index + 1}.wav"), 2.0 + index, index)
    (data / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    result = run(f"--data_dir={data}", "--format=ljspeech", f"--output_dir={out}",
                 "--test_size=0", "--max_tokens=0")
    assert result.returncode == 0, result.stderr
    rows = read_jsonl(out / "train.jsonl")
    assert [r["sentence"] for r in rows] == ["Printing, in fourteen fifty, began.",
                                             "Doctor Smith came.", "It was three pm."]
    assert [r["duration"] for r in rows] == [2.0, 3.0, 4.0]
    assert read_jsonl(out / "test.jsonl") == []

    result = run(f"--data_dir={data}", "--format=ljspeech", f"--output_dir={out}",
                 "--test_size=0", "--max_tokens=0", "--ljspeech_text=raw")
    assert [r["sentence"] for r in read_jsonl(out / "train.jsonl")][0] == \
        "Printing, in 1450, began."

    (data / "metadata.csv").write_text("\n".join(lines + ["LJ001-0004|only two"]) + "\n",
                                       encoding="utf-8")
    before = (out / "train.jsonl").read_bytes()
    result = run(f"--data_dir={data}", "--format=ljspeech", f"--output_dir={out}",
                 "--max_tokens=0")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "metadata.csv, line 4: expected 3 fields" in result.stderr
    assert (out / "train.jsonl").read_bytes() == before
