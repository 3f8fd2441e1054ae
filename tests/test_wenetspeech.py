"""tools/create_wenetspeech_data.py on a miniature WenetSpeech.json with opus audio built here.

Every labelled segment is a loud tone, unlabelled stretches are faint noise, so the cut
positions and the silencing can be checked in the written clips.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from utils.data.builders import wenetspeech  # noqa: E402
from utils.data.builders.common import BuildError  # noqa: E402

SCRIPT = os.path.join(ROOT, "tools", "create_wenetspeech_data.py")
SR = 16000

TRAIN = [  # begin, end, text, confidence, subsets
    (1.0, 4.0, "今天天气很好", 1.0, ["S", "M", "L"]),
    (4.5, 9.0, "我们去公园", 1.0, ["M", "L"]),
    (9.5, 20.0, "散步吧", 0.98, ["L"]),
    (20.5, 33.0, "晚上回家", 1.0, ["L"]),
    (34.0, 36.0, "听不清楚", 0.5, ["L"]),          # low confidence: left out
    (36.5, 38.0, "好的", 1.0, ["L"]),
]


def write_opus(path, seconds, segments):
    import av

    rng = np.random.default_rng(0)
    audio = rng.normal(0, 0.01, int(seconds * SR)).astype(np.float32)
    for index, (begin, end, *_) in enumerate(segments):
        t = np.arange(int(round(begin * SR)), int(round(end * SR))) / SR
        audio[int(round(begin * SR)):int(round(end * SR))] = \
            0.3 * np.sin(2 * np.pi * (300 + 100 * index) * t)
    with av.open(str(path), "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=48000, layout="mono")
        frame = av.AudioFrame.from_ndarray(audio[None, :], format="flt", layout="mono")
        frame.sample_rate = SR
        resampler = av.AudioResampler(format="s16", layout="mono", rate=48000)
        for out in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(out):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def segment_json(aid, segments):
    return [{"sid": f"{aid}_S{i:05d}", "begin_time": b, "end_time": e, "text": text,
             "confidence": c, "subsets": subsets}
            for i, (b, e, text, c, subsets) in enumerate(segments)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("wenet")
    test_net = [(0.5, 3.0, "测试网络", 1.0, ["TEST_NET"])]
    test_meeting = [(1.0, 2.5, "开会了", 1.0, ["TEST_MEETING"]),
                    (3.0, 5.0, "请坐", 1.0, ["TEST_MEETING"])]
    os.makedirs(root / "audio/train/youtube/B00000")
    os.makedirs(root / "audio/test")
    write_opus(root / "audio/train/youtube/B00000/Y0000.opus", 40.0, TRAIN)
    write_opus(root / "audio/test/N0001.opus", 4.0, test_net)
    write_opus(root / "audio/test/M0001.opus", 6.0, test_meeting)
    data = {"dataset": "WenetSpeech", "language": "Chinese", "version": "1.0", "audios": [
        {"aid": "Y0000", "path": "audio/train/youtube/B00000/Y0000.opus", "duration": 40.0,
         "segments": segment_json("Y0000", TRAIN)},
        {"aid": "N0001", "path": "audio/test/N0001.opus", "duration": 4.0,
         "segments": segment_json("N0001", test_net)},
        {"aid": "M0001", "path": "audio/test/M0001.opus", "duration": 6.0,
         "segments": segment_json("M0001", test_meeting)}]}
    (root / "WenetSpeech.json").write_text(json.dumps(data, ensure_ascii=False, indent=1),
                                           encoding="utf-8")
    return root


def run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                          cwd=ROOT)


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def rms(audio, start, end):
    piece = audio[int(start * SR):int(end * SR)]
    return float(np.sqrt(np.mean(piece ** 2)))


def test_windows_splits_and_timestamps(corpus, tmp_path):
    out = tmp_path / "out"
    result = run(f"--wenetspeech_json={corpus / 'WenetSpeech.json'}", f"--output_dir={out}",
                 "--num_workers=2")
    assert result.returncode == 0, result.stderr
    train = read_jsonl(out / "train.jsonl")
    # 今天..散步吧 fill 19 s; adding 晚上回家 would make 32 s; the low-confidence segment
    # cuts 晚上回家 off from 好的 because its speech would be in the audio but not the label.
    assert [r["sentence"] for r in train] == ["今天天气很好我们去公园散步吧", "晚上回家", "好的"]
    assert [r["duration"] for r in train] == pytest.approx([19.0, 12.5, 1.5], abs=0.01)
    assert train[0]["sentences"] == [{"start": 0.0, "end": 3.0, "text": "今天天气很好"},
                                     {"start": 3.5, "end": 8.0, "text": "我们去公园"},
                                     {"start": 8.5, "end": 19.0, "text": "散步吧"}]
    assert all(r["language"] == "Chinese" for r in train)
    assert [r["sentence"] for r in read_jsonl(out / "test_net.jsonl")] == ["测试网络"]
    meeting = read_jsonl(out / "test_meeting.jsonl")
    assert [(r["sentence"], r["sentences"]) for r in meeting] == [
        ("开会了请坐", [{"start": 0.0, "end": 1.5, "text": "开会了"},
                    {"start": 2.0, "end": 4.0, "text": "请坐"}])]
    assert read_jsonl(out / "dev.jsonl") == []

    clip, rate = soundfile.read(os.path.join(ROOT, train[0]["audio"]["path"]), dtype="float32")
    assert rate == SR and len(clip) / SR == pytest.approx(19.0, abs=0.01)
    for s in train[0]["sentences"]:      # the tones sit where the timestamps say
        assert rms(clip, s["start"] + 0.05, s["end"] - 0.05) > 0.15
    assert 0.002 < rms(clip, 3.05, 3.45) < 0.03   # unlabelled gap kept as recorded
    assert "summary: train.jsonl 3 windows" in result.stdout


def test_silence_gaps_subset_and_resume(corpus, tmp_path):
    out = tmp_path / "out"
    args = [f"--wenetspeech_json={corpus / 'WenetSpeech.json'}", f"--output_dir={out}",
            "--num_workers=1"]
    assert run(*args, "--silence_gaps").returncode == 0
    train = read_jsonl(out / "train.jsonl")
    assert [r["sentence"] for r in train] == ["今天天气很好我们去公园散步吧", "晚上回家好的"]
    second = train[1]
    assert second["duration"] == pytest.approx(17.5, abs=0.01)
    clip, _ = soundfile.read(os.path.join(ROOT, second["audio"]["path"]), dtype="float32")
    assert np.abs(clip[int(12.6 * SR):int(15.9 * SR)]).max() == 0    # low-confidence part
    assert rms(clip, 16.1, 17.4) > 0.15

    first_clip = os.path.join(ROOT, train[0]["audio"]["path"])
    os.utime(first_clip, (1, 1))
    result = run(*args, "--silence_gaps")                # rerun: clips reused, not recut
    assert result.returncode == 0 and read_jsonl(out / "train.jsonl") == train
    assert os.stat(first_clip).st_mtime == 1
    assert run(*args).returncode == 0                    # other settings: recut
    assert os.stat(first_clip).st_mtime != 1

    result = run(*args, "--train_subset=S")
    assert [r["sentence"] for r in read_jsonl(out / "train.jsonl")] == ["今天天气很好"]


def test_bad_inputs(corpus, tmp_path):
    data = json.loads((corpus / "WenetSpeech.json").read_text(encoding="utf-8"))
    del data["audios"][1]["segments"][0]["end_time"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data), encoding="utf-8")
    result = run(f"--wenetspeech_json={bad}", f"--wenetspeech_dir={corpus}",
                 f"--output_dir={tmp_path / 'o1'}", "--num_workers=1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "audios[1] (N0001) segments[0] lacks end_time" in result.stderr
    assert not [f for f in os.listdir(tmp_path / "o1") if f.endswith((".jsonl", ".part"))]

    data = json.loads((corpus / "WenetSpeech.json").read_text(encoding="utf-8"))
    data["audios"][2]["path"] = "audio/test/missing.opus"
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps(data), encoding="utf-8")
    common = [f"--wenetspeech_json={missing}", f"--wenetspeech_dir={corpus}",
              f"--output_dir={tmp_path / 'o2'}", "--num_workers=1"]
    result = run(*common)
    assert result.returncode == 2 and "missing.opus: audio file not found" in result.stderr
    assert not (tmp_path / "o2" / "train.jsonl").exists()
    result = run(*common, "--skip_bad_audio")
    assert result.returncode == 0 and "1 audio files unreadable" in result.stdout
    assert read_jsonl(tmp_path / "o2" / "test_meeting.jsonl") == []


def test_json_is_streamed(tmp_path):
    """The first audio entry arrives before the parser reaches a broken tail."""
    text = json.dumps({"audios": [{"aid": "A", "path": "a.opus", "segments": []}]})
    broken = tmp_path / "broken.json"
    broken.write_text(text[:-2] + ', {"aid": "B", "pa', encoding="utf-8")
    entries = wenetspeech.iter_audios(str(broken))
    assert next(entries)["aid"] == "A"
    with pytest.raises(BuildError, match="not valid JSON"):
        next(entries)


def test_flag_mistakes_end_in_one_line(tmp_path):
    for args, expected in [(["--num_workers=0"], "--num_workers=0: must be at least 1"),
                           (["--max_seconds=31"], "--max_seconds=31.0: must lie in (0, 30]"),
                           (["--min_confidense=0.9"], "did you mean --min_confidence?")]:
        result = run(f"--wenetspeech_json={tmp_path / 'x.json'}", *args)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert expected in result.stderr
