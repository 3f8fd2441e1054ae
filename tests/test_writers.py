"""Output formats: each file parses with the reader its consumers use."""
import json

import pytest
import srt
import webvtt

from utils.inference.transcriber import Segment, TranscriptionInfo, Word
from utils.inference.writers import FORMATS, format_timestamp, get_writer, transcript_text

SEGMENTS = [
    Segment(0.0, 2.5, " Hello there."),
    Segment(2.5, 3661.042, "A cue\nwith a line break, and a\ttab.",
            words=[Word(2.5, 3.0, " A", 0.9), Word(3.0, 3.4, " cue", 0.8)]),
    Segment(3661.5, 3662.0, "你好。"),
]
INFO = TranscriptionInfo(language="en", language_probability=0.93, duration=3662.2)


def test_format_timestamp():
    assert format_timestamp(0) == "00:00.000"
    assert format_timestamp(3661.042, ",", always_hours=True) == "01:01:01,042"
    assert format_timestamp(59.9996) == "01:00.000"


def test_srt_parses_with_srt_library(tmp_path):
    path = get_writer("srt", str(tmp_path))(SEGMENTS, INFO, "/some/where/talk.mp3")
    assert path == str(tmp_path / "talk.srt")
    cues = list(srt.parse(open(path, encoding="utf-8").read()))
    assert [c.index for c in cues] == [1, 2, 3]
    assert cues[1].start.total_seconds() == 2.5
    assert cues[1].end.total_seconds() == pytest.approx(3661.042)
    assert cues[1].content == "A cue with a line break, and a tab."
    assert cues[2].content == "你好。"


def test_vtt_parses_with_webvtt(tmp_path):
    path = get_writer("vtt", str(tmp_path))(SEGMENTS, INFO, "talk.wav")
    cues = webvtt.read(path)
    assert [c.text for c in cues] == ["Hello there.", "A cue with a line break, and a tab.", "你好。"]
    assert cues[1].end == "01:01:01.042"


def test_json_holds_segments_language_and_words(tmp_path):
    path = get_writer("json", str(tmp_path))(SEGMENTS, INFO, "talk.wav")
    data = json.load(open(path, encoding="utf-8"))
    assert data["language"] == "en" and data["duration"] == 3662.2
    assert [s["start"] for s in data["segments"]] == [0.0, 2.5, 3661.5]
    assert data["segments"][1]["words"][1] == {"start": 3.0, "end": 3.4, "word": " cue", "probability": 0.8}
    assert data["text"].startswith("Hello there. A cue")


def test_tsv_and_txt(tmp_path):
    tsv = open(get_writer("tsv", str(tmp_path))(SEGMENTS, INFO, "a.wav"), encoding="utf-8").read().splitlines()
    assert tsv[0] == "start\tend\ttext"
    assert tsv[2].split("\t") == ["2500", "3661042", "A cue with a line break, and a tab."]
    txt = open(get_writer("txt", str(tmp_path))(SEGMENTS, INFO, "a.wav"), encoding="utf-8").read()
    assert txt.splitlines()[0] == "Hello there."


def test_all_writes_every_format_and_leaves_no_partial_files(tmp_path):
    written = get_writer("all", str(tmp_path / "out"))(iter(SEGMENTS), INFO, "clip.flac")
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted(f"clip.{ext}" for ext in FORMATS if ext != "all")
    assert written.count("clip.") == 5


def test_empty_transcript_is_still_valid(tmp_path):
    path = get_writer("srt", str(tmp_path))([], INFO, "silence.wav")
    assert list(srt.parse(open(path).read())) == []
    assert json.load(open(get_writer("json", str(tmp_path))([], INFO, "silence.wav")))["segments"] == []


def test_unknown_format_names_the_valid_ones():
    with pytest.raises(ValueError, match="valid formats: txt, srt, vtt, tsv, json, all"):
        get_writer("docx", "out")


def test_transcript_text_joins_without_spaces_between_chinese_segments():
    segments = [Segment(0, 1, "你好。"), Segment(1, 2, "再见。"), Segment(2, 3, "OK"), Segment(3, 4, "done")]
    assert transcript_text(segments) == "你好。再见。OK done"
