"""infer_stream.py: a file streamed through tiny.en prints its commits, and mistakes end in one sentence."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import REPO
from transcription_audio import wer

import infer_stream

COMMIT_LINE = re.compile(r"^\[(\d+\.\d\d) - (\d+\.\d\d)\] (.+)$", re.MULTILINE)


def test_a_file_streams_to_commit_lines_that_read_as_the_transcript():
    result = subprocess.run(
        [sys.executable, "infer_stream.py", "--audio_path=dataset/sample_en.wav",
         "--model_path=models/whisper-tiny.en-ct2", "--compute_type=int8", "--chunk_s=2"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    commits = COMMIT_LINE.findall(result.stdout)
    assert len(commits) >= 3, result.stdout
    times = [(float(start), float(end)) for start, end, _ in commits]
    assert all(a[1] <= b[0] + 0.01 for a, b in zip(times, times[1:])), times   # in order on the stream clock
    assert 0 <= times[0][0] and times[-1][1] <= 12.2
    text = " ".join(line for _, _, line in commits)
    reference = (REPO / "dataset" / "sample_en.txt").read_text()
    assert wer(reference, text) <= 0.15, text
    summary = result.stdout.strip().splitlines()[-1]
    assert re.match(r"streamed 12\.1 s of audio in [\d.]+ s: \d+ words committed, \d+ decodes$", summary), summary


@pytest.mark.parametrize("argv, message", [
    ([], "give either --audio_path=FILE or --microphone"),
    (["--audio_path=x.wav", "--microphone"], "not both or neither"),
    (["--microphone", "--simulate_realtime"], "--simulate_realtime plays a file"),
    (["--audio_path=x.wav", "--chunk_s=0"], "--chunk_s must be above 0"),
    (["--audio_path=x.wav", "--pause_commit_s=0"], "--pause_commit_s must be above 0"),
    (["--audio_path=missing.wav"], "missing.wav"),
])
def test_mistakes_end_in_one_sentence(argv, message, capsys):
    try:
        status = infer_stream.main(argv)
    except SystemExit as exit:      # a flag mistake ends in argparse's exit
        status = exit.code
    assert status == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and message in error[0], error


def test_options_out_of_range_fail_before_the_model_loads(monkeypatch, capsys):
    monkeypatch.setattr(infer_stream, "load_transcriber", lambda *a, **k: pytest.fail("the model was loaded"))
    status = infer_stream.main([f"--audio_path={REPO / 'dataset' / 'sample_en.wav'}", "--context_gap_s=15"])
    assert status == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == ["error: context_gap_s must be between 0 and 30 - max_buffer_s = 10 s, got 15.0"], error
