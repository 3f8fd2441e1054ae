"""The shipped sample corpus (dataset/) and the synthesizer that makes it."""
import json
import os
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from utils.data.builders import synthetic  # noqa: E402
from utils.data.builders.common import BuildError  # noqa: E402

SCRIPT = os.path.join(ROOT, "tools", "synthesize_speech.py")
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng not installed")


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def on_grid(t):
    return abs(t * 50 - round(t * 50)) < 1e-6


@pytest.mark.parametrize("name", ["zh_train", "zh_test", "en_test"])
def test_shipped_manifest_matches_its_audio(name):
    rows = read_jsonl(os.path.join(ROOT, "dataset", f"{name}.jsonl"))
    assert len(rows) >= (250 if name == "zh_train" else 20)
    for row in rows:
        path = row["audio"]["path"]
        assert path.startswith("dataset/audio/") and not os.path.isabs(path)
        info = soundfile.info(os.path.join(ROOT, path))
        assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
        assert row["duration"] == pytest.approx(info.duration, abs=0.006)
        assert 2.0 <= row["duration"] <= 8.0
        assert row["language"] == ("English" if name.startswith("en") else "Chinese")
        # The clause texts rebuild the sentence, and the times are ordered on the grid.
        assert "".join(s["text"] for s in row["sentences"]) == row["sentence"].replace(" ", "") \
            or " ".join(s["text"] for s in row["sentences"]) == row["sentence"]
        previous_end = 0.0
        for clause in row["sentences"]:
            assert on_grid(clause["start"]) and on_grid(clause["end"])
            assert previous_end <= clause["start"] < clause["end"] <= row["duration"]
            previous_end = clause["end"]
    if name.startswith("zh"):
        no_speech = [r for r in rows if r["sentence"] == ""]
        assert len(no_speech) >= 2 and all(r["sentences"] == [] for r in no_speech)


def test_shipped_test_split_is_unseen_in_training():
    train = {r["sentence"] for r in read_jsonl(os.path.join(ROOT, "dataset/zh_train.jsonl"))}
    test = [r["sentence"] for r in read_jsonl(os.path.join(ROOT, "dataset/zh_test.jsonl"))
            if r["sentence"]]
    assert 40 <= len(test) <= 60
    assert not train & set(test)
    with open(os.path.join(ROOT, "dataset/test_long.txt"), encoding="utf-8") as f:
        long_lines = [line.strip() for line in f if line.strip()]
    assert not train & set(long_lines)
    # Voice settings of the test split are never used for training.
    lines = synthetic.read_lines(os.path.join(ROOT, "tools/sentences_zh.txt"), "Chinese")
    (tr, te, lo), (train_voices, test_voices) = synthetic.split_corpus(lines, 50, 36, random.Random(2024))
    assert set(te) == set(test) and set(lo) == set(long_lines)
    assert test_voices and not set(train_voices) & set(test_voices)


def test_clause_times_are_exact_in_shipped_audio():
    """Speech inside every clause, digital silence between clauses: the times are exact."""
    rows = [r for r in read_jsonl(os.path.join(ROOT, "dataset/zh_train.jsonl"))
            if len(r["sentences"]) >= 2][:10]
    assert len(rows) == 10
    for row in rows:
        audio, rate = soundfile.read(os.path.join(ROOT, row["audio"]["path"]), dtype="float32")
        edges = [0.0] + [t for s in row["sentences"] for t in (s["start"], s["end"])]
        edges.append(row["duration"])
        for start, end in zip(edges[::2], edges[1::2]):          # gaps
            assert np.abs(audio[int(start * rate):int(end * rate)]).max(initial=0) == 0
        for clause in row["sentences"]:
            piece = audio[int(clause["start"] * rate):int(clause["end"] * rate)]
            assert np.sqrt(np.mean(piece ** 2)) > 0.01


def test_shipped_wavs():
    for name, low, high in [("test.wav", 5, 15), ("test_long.wav", 150, 210)]:
        info = soundfile.info(os.path.join(ROOT, "dataset", name))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert low <= info.duration <= high
    with open(os.path.join(ROOT, "dataset/test.txt"), encoding="utf-8") as f:
        assert "压岁书" in f.read()
    with open(os.path.join(ROOT, "dataset/test_long.txt"), encoding="utf-8") as f:
        assert len([line for line in f if line.strip()]) >= 30


def test_clause_splitting_and_pinyin():
    assert synthetic.split_clauses("近几年，我用书压岁。好吗？", "Chinese") == \
        ["近几年，", "我用书压岁。", "好吗？"]
    assert synthetic.split_clauses("It costs 3,000 dollars, he said.", "English") == \
        ["It costs 3,000 dollars,", "he said."]
    assert synthetic.to_espeak_text("女儿的书、绿色。", "Chinese") == \
        "nv3 er2 de5 shu1 , lv4 se4"
    with pytest.raises(BuildError, match="'2'"):
        synthetic.to_espeak_text("二零二四年是2024", "Chinese")


@needs_espeak
def test_clips_command_is_deterministic_and_atomic(tmp_path):
    text = tmp_path / "lines.txt"
    text.write_text("# comment\n今天天气很好，我们去公园散步吧。\n\n我叫张伟，来自山东青岛。\n",
                    encoding="utf-8")
    manifests = []
    for run in ("a", "b"):
        manifest = tmp_path / f"{run}.jsonl"
        result = subprocess.run([sys.executable, SCRIPT, "clips", f"--text_file={text}",
                                 f"--output_dir={tmp_path / run}", f"--manifest={manifest}",
                                 "--no_speech=1", "--seed=7"], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert "summary: 3 clips" in result.stdout
        manifests.append(read_jsonl(manifest))
    first, second = manifests
    assert [r["sentence"] for r in first] == ["今天天气很好，我们去公园散步吧。",
                                              "我叫张伟，来自山东青岛。", ""]
    assert [r["sentences"] for r in first] == [r["sentences"] for r in second]
    for a, b in zip(first, second):
        assert open(a["audio"]["path"], "rb").read() == open(b["audio"]["path"], "rb").read()
        assert a["duration"] == pytest.approx(soundfile.info(a["audio"]["path"]).duration,
                                              abs=0.006)
    assert not list(tmp_path.rglob("*.part"))


@needs_espeak
def test_bad_line_is_named_and_nothing_is_written(tmp_path):
    text = tmp_path / "lines.txt"
    text.write_text("今天天气很好。\n我有3个苹果。\n", encoding="utf-8")
    manifest = tmp_path / "out.jsonl"
    result = subprocess.run([sys.executable, SCRIPT, "clips", f"--text_file={text}",
                             f"--output_dir={tmp_path / 'a'}", f"--manifest={manifest}"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert f"{text}, line 2" in result.stderr and "Traceback" not in result.stderr
    assert not manifest.exists() and not (tmp_path / "a").exists()


@needs_espeak
def test_unknown_variant_is_rejected(tmp_path):
    text = tmp_path / "lines.txt"
    text.write_text("Hello there.\n", encoding="utf-8")
    result = subprocess.run([sys.executable, SCRIPT, "clips", f"--text_file={text}",
                             "--language=English", "--variants=f2,nosuchvoice",
                             f"--output_dir={tmp_path}", f"--manifest={tmp_path / 'm.jsonl'}"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "unknown espeak-ng variant(s) nosuchvoice" in result.stderr


@needs_espeak
def test_long_command_writes_audio_and_reference(tmp_path):
    text = tmp_path / "lines.txt"
    text.write_text("The first speaker reads this line.\nThe second one reads this.\n",
                    encoding="utf-8")
    out = tmp_path / "long.wav"
    result = subprocess.run([sys.executable, SCRIPT, "long", f"--text_file={text}",
                             "--language=English", f"--output={out}"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert 2.0 < soundfile.info(out).duration < 12.0
    assert (tmp_path / "long.txt").read_text(encoding="utf-8").splitlines() == \
        ["The first speaker reads this line.", "The second one reads this."]


@needs_espeak
@pytest.mark.slow
def test_sample_corpus_regenerates_the_shipped_files(tmp_path):
    version = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout
    if " 1.51 " not in version:
        pytest.skip(f"shipped corpus was made with espeak-ng 1.51, this is: {version.strip()}")
    result = subprocess.run([sys.executable, SCRIPT, "sample-corpus",
                             f"--output_dir={tmp_path}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for name in ["test.wav", "test_long.wav", "test_long.txt", "audio/zh_test_0001.flac",
                 "audio/zh_train_0100.flac", "audio/zh_train_nospeech_01.flac"]:
        with open(tmp_path / name, "rb") as fresh, \
                open(os.path.join(ROOT, "dataset", name), "rb") as shipped:
            assert fresh.read() == shipped.read(), name
    fresh = read_jsonl(tmp_path / "zh_test.jsonl")
    shipped = read_jsonl(os.path.join(ROOT, "dataset/zh_test.jsonl"))
    for a, b in zip(fresh, shipped):
        assert os.path.relpath(a["audio"]["path"], tmp_path) == \
            os.path.relpath(b["audio"]["path"], "dataset")
        assert (a["sentence"], a["sentences"], a["duration"]) == \
            (b["sentence"], b["sentences"], b["duration"])


def test_command_line_mistakes_end_in_one_line():
    def run(*args):
        return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True)

    result = run("--help")
    assert result.returncode == 0 and "sample-corpus" in result.stdout and "more-train" in result.stdout
    assert "--no_speech_train" in result.stdout and "--audio_format" in result.stdout   # every command's flags
    for args, expected in [(["--bogus=1"], "(and a command comes first: clips, long, sample-corpus, more-train"),
                           (["--voice_see=1"], "did you mean --voice_seed?"),
                           (["--text_file=x"], "the first argument is the command, one of clips, long"),
                           (["sample_corpus"], "did you mean sample-corpus?"),
                           (["clips", "--bogus=1"], "unknown flag --bogus"),
                           (["clips", "--text_file=t", "--output_dir=o", "--manifest=m", "--no_speech=-1"],
                            "--no_speech=-1: must not be negative"),
                           (["more-train", "--output_dir=o", "--manifest=m", "--readings=0"],
                            "--readings=0: must be at least 1")]:
        result = run(*args)
        assert result.returncode == 2, args
        assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
