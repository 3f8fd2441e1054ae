"""aishell.py on a miniature archive with AIShell-1's layout, built here.

data_aishell.tgz
  data_aishell/transcript/aishell_transcript_v0.8.txt
  data_aishell/wav/<speaker>.tar.gz  ->  <split>/<speaker>/BAC009<speaker>W<n>.wav
"""
import hashlib
import http.server
import io
import json
import os
import subprocess
import sys
import tarfile
import threading

import numpy as np
import pytest
import soundfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import aishell  # noqa: E402
from utils.data.builders import aishell as aishell_builder  # noqa: E402
from utils.data.builders import archives, common  # noqa: E402
from utils.data.builders.common import BuildError  # noqa: E402

SPEAKERS = {"S0002": "train", "S0003": "train", "S0724": "dev", "S0764": "test"}
TEXTS = ["而 对 楼市 成交 抑制 作用 最 大 的 限 购", "也 成为 地方 政府 的 眼中 钉",
         "自 六月 底 呼和浩特 市 率先 宣布 取消 限 购 后"]


def utterances():
    """(speaker, split, utterance id, duration) of every clip in the miniature corpus."""
    for s_index, (speaker, split) in enumerate(SPEAKERS.items()):
        for n in range(3):
            yield speaker, split, f"BAC009{speaker}W{n:04d}", 0.5 + 0.25 * n + 0.1 * s_index


def add_bytes(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def wav_bytes(seconds, seed):
    audio = np.random.default_rng(seed).normal(0, 0.05, int(seconds * 16000)).astype("float32")
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, 16000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def build_archive(path, speakers_in_split_dirs=False, transcript_lines=None):
    clips = list(utterances())
    if transcript_lines is None:
        # S0003's last clip has no line (missing), one line names no clip (extra).
        transcript_lines = [f"{uid} {TEXTS[i % 3]}" for i, (_, _, uid, _) in enumerate(clips)
                            if uid != "BAC009S0003W0002"]
        transcript_lines.append("BAC009S0999W0001 多 出来 的 一 行")
    with tarfile.open(path, "w:gz") as outer:
        add_bytes(outer, "data_aishell/transcript/aishell_transcript_v0.8.txt",
                  ("\n".join(transcript_lines) + "\n").encode("utf-8"))
        for speaker, split in SPEAKERS.items():
            inner_buffer = io.BytesIO()
            with tarfile.open(fileobj=inner_buffer, mode="w:gz") as inner:
                for index, (spk, spl, uid, seconds) in enumerate(clips):
                    if spk == speaker:
                        add_bytes(inner, f"{split}/{speaker}/{uid}.wav", wav_bytes(seconds, index))
            where = f"data_aishell/wav/{split}/" if speakers_in_split_dirs else "data_aishell/wav/"
            add_bytes(outer, f"{where}{speaker}.tar.gz", inner_buffer.getvalue())
    return path


def run(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "aishell.py"), *args],
                          capture_output=True, text=True, cwd=ROOT)


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("split_dirs", [False, True], ids=["wav-speaker", "wav-split-speaker"])
def test_builds_manifests_from_miniature_archive(tmp_path, split_dirs):
    archive = build_archive(tmp_path / "data_aishell.tgz", speakers_in_split_dirs=split_dirs)
    result = run(f"--filepath={archive}", f"--target_dir={tmp_path / 'unpacked'}",
                 f"--annotation_text={tmp_path / 'manifests'}")
    assert result.returncode == 0, result.stderr
    assert "1 no transcript" in result.stdout and "1 transcript lines without audio" in result.stdout

    train = read_jsonl(tmp_path / "manifests/train.json")
    test = read_jsonl(tmp_path / "manifests/test.json")
    expected = {uid: (split, seconds) for _, split, uid, seconds in utterances()
                if uid != "BAC009S0003W0002"}
    got = {os.path.basename(r["audio"]["path"])[:-4]: r for r in train + test}
    assert set(got) == set(expected)
    assert {os.path.basename(r["audio"]["path"])[6:11] for r in train} == {"S0002", "S0003",
                                                                            "S0724"}
    assert {os.path.basename(r["audio"]["path"])[6:11] for r in test} == {"S0764"}
    for uid, row in got.items():
        assert os.path.isabs(row["audio"]["path"]) and os.path.isfile(row["audio"]["path"])
        assert row["duration"] == pytest.approx(expected[uid][1], abs=0.006)
        assert row["sentence"] in {t.replace(" ", "") for t in TEXTS}
        assert row["sentences"] == [{"start": 0.0, "end": row["sentences"][0]["end"],
                                     "text": row["sentence"]}]
        assert row["duration"] - 0.02 < row["sentences"][0]["end"] <= row["duration"]
    assert got["BAC009S0002W0000"]["sentence"] == "而对楼市成交抑制作用最大的限购"


def test_dev_separately(tmp_path):
    archive = build_archive(tmp_path / "data_aishell.tgz")
    result = run(f"--filepath={archive}", f"--target_dir={tmp_path / 'u'}",
                 f"--annotation_text={tmp_path / 'm'}", "--dev_separately")
    assert result.returncode == 0, result.stderr
    dev = read_jsonl(tmp_path / "m/dev.json")
    train = read_jsonl(tmp_path / "m/train.json")
    assert {os.path.basename(r["audio"]["path"])[6:11] for r in dev} == {"S0724"}
    assert len(train) == 5 and len(dev) == 3


def test_rerun_resumes_without_reextracting(tmp_path):
    archive = build_archive(tmp_path / "data_aishell.tgz")
    target = str(tmp_path / "u")
    aishell_builder.unpack(str(archive), target)
    wav_dir = os.path.join(target, "data_aishell", "wav")
    kept = os.path.join(wav_dir, "train", "S0002", "BAC009S0002W0000.wav")
    lost = os.path.join(wav_dir, "test", "S0764", "BAC009S0764W0001.wav")
    os.utime(kept, (1, 1))                       # a file from "before the interruption"
    # Interrupted while unpacking S0764 (its marker never written, one clip missing) and
    # while unpacking the outer archive (its marker never written either).
    os.remove(lost)
    os.remove(os.path.join(wav_dir, "S0764.tar.gz.unpacked"))
    os.remove(os.path.join(target, "data_aishell", ".unpacked"))
    aishell_builder.unpack(str(archive), target)
    assert os.path.getsize(lost) > 0
    assert os.stat(kept).st_mtime == 1           # finished parts were not extracted again


def test_interrupted_manifest_keeps_previous_file(tmp_path, monkeypatch):
    archive = build_archive(tmp_path / "data_aishell.tgz")
    manifests = tmp_path / "m"
    manifests.mkdir()
    (manifests / "train.json").write_text("previous\n", encoding="utf-8")
    calls = []

    def interrupted(path):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return 1.0

    monkeypatch.setattr(common, "audio_duration", interrupted)
    status = aishell.main([f"--filepath={archive}", f"--target_dir={tmp_path / 'u'}",
                           f"--annotation_text={manifests}"])
    assert status == 130                         # Ctrl-C: its own exit status, no traceback
    assert (manifests / "train.json").read_text(encoding="utf-8") == "previous\n"
    assert sorted(os.listdir(manifests)) == ["train.json"]


def test_malformed_inputs_give_one_clear_sentence(tmp_path):
    bad = build_archive(tmp_path / "bad.tgz", transcript_lines=[
        "BAC009S0002W0000 而 对 楼市", "BAC009S0002W0001"])
    result = run(f"--filepath={bad}", f"--target_dir={tmp_path / 'u1'}",
                 f"--annotation_text={tmp_path / 'm1'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "aishell_transcript_v0.8.txt, line 2" in result.stderr
    assert not (tmp_path / "m1" / "train.json").exists()

    other = tmp_path / "other.tgz"
    with tarfile.open(other, "w:gz") as tar:
        add_bytes(tar, "readme.txt", b"not aishell")
    result = run(f"--filepath={other}", f"--target_dir={tmp_path / 'u2'}")
    assert result.returncode == 2 and "is this AIShell-1's data_aishell.tgz?" in result.stderr

    result = run(f"--filepath={tmp_path / 'missing.tgz'}", f"--target_dir={tmp_path / 'u3'}")
    assert result.returncode == 2 and "missing.tgz: file not found" in result.stderr

    garbage = tmp_path / "garbage.tgz"
    garbage.write_bytes(b"\x1f\x8b" + b"\x00" * 100)
    result = run(f"--filepath={garbage}", f"--target_dir={tmp_path / 'u4'}")
    assert result.returncode == 2 and "cannot unpack" in result.stderr
    assert "Traceback" not in result.stderr


def test_add_pun_without_modelscope_fails_before_any_work(tmp_path):
    try:
        import modelscope  # noqa: F401
        pytest.skip("modelscope is installed here")
    except ImportError:
        pass
    result = run("--add_pun", f"--target_dir={tmp_path / 'u'}", "--url=http://127.0.0.1:9/x")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--add_pun needs the ModelScope punctuation model" in result.stderr
    assert not (tmp_path / "u").exists()


class RangeHandler(http.server.BaseHTTPRequestHandler):
    payload = b""
    ranges = []

    def do_GET(self):  # noqa: N802 - http.server's naming
        start = 0
        header = self.headers.get("Range")
        RangeHandler.ranges.append(header)
        if header:
            start = int(header.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range",
                             f"bytes {start}-{len(self.payload) - 1}/{len(self.payload)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload) - start))
        self.end_headers()
        self.wfile.write(self.payload[start:])

    def log_message(self, *args):
        pass


def test_download_resumes_and_checks_md5(tmp_path):
    payload = os.urandom(300_000)
    RangeHandler.payload, RangeHandler.ranges = payload, []
    server = http.server.HTTPServer(("127.0.0.1", 0), RangeHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/data_aishell.tgz"
    try:
        (tmp_path / "data_aishell.tgz.part").write_bytes(payload[:100_000])
        md5 = hashlib.md5(payload).hexdigest()
        path = archives.download(url, str(tmp_path), md5, "use a local copy")
        assert open(path, "rb").read() == payload
        assert RangeHandler.ranges == ["bytes=100000-"]
        assert archives.download(url, str(tmp_path), md5, "use a local copy") == path   # verified copy: no request
        assert len(RangeHandler.ranges) == 1

        os.makedirs(tmp_path / "x")
        with pytest.raises(BuildError, match="expected 0+; the partial file"):
            archives.download(url, str(tmp_path / "x"), "0" * 32, "use a local copy")
        assert not os.listdir(tmp_path / "x")
    finally:
        server.shutdown()
