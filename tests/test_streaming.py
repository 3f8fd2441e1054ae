"""Live transcription (utils/inference/streaming.py): LocalAgreement-2, buffer trimming and the
stream clock with a scripted fake model, then a real tiny.en stream against the offline transcript."""
from __future__ import annotations

import numpy as np
import pytest
from transcription_audio import english_clip, normalize, wer

from utils.core.audio import SAMPLE_RATE, load_audio
from utils.inference.streaming import (
    StreamingOptions,
    StreamingTranscriber,
    agreed_prefix,
    cut_loop,
    drop_repeated,
    said_again,
)
from utils.inference.transcriber import (
    Segment,
    TranscribeOptions,
    Transcriber,
    TranscriptionError,
    TranscriptionInfo,
    Word,
)

TINY_EN = "models/whisper-tiny.en-ct2"


def script_words(count: int, sentence: int = 8, start: float = 0.5, step: float = 0.4) -> list[Word]:
    """`count` words 0.3 s long, one every `step` s; every `sentence`-th ends with a full stop."""
    return [Word(start=round(start + i * step, 3), end=round(start + i * step + 0.3, 3),
                 word=f" w{i}" + ("." if sentence and (i + 1) % sentence == 0 else ""), probability=0.9)
            for i in range(count)]


class ScriptedTranscriber(Transcriber):
    """Hears the words of a script that lie inside the audio it gets. The audio is a ramp whose
    sample values are their stream times, so the fake knows where the buffer starts. A word ending
    within `unsure_s` of the buffer's end comes out different on every call, as the unfinished last
    word of a real decode does; `agree=False` makes every word different on every call."""

    backend = "fake"
    multilingual = False

    def __init__(self, words: list[Word], unsure_s: float = 0.5, agree: bool = True):
        self.words, self.unsure_s, self.agree = words, unsure_s, agree
        self.calls: list[tuple[float, float, str]] = []    # (buffer start, duration, prompt)
        self.short_windows: list[bool] = []                 # TranscribeOptions.short_window per call

    def _transcribe(self, audio, resolved):
        start, duration = float(audio[0]), len(audio) / SAMPLE_RATE
        self.calls.append((start, duration, resolved.options.initial_prompt or ""))
        self.short_windows.append(resolved.options.short_window)
        assert resolved.options.word_timestamps
        heard = []
        for index, word in enumerate(self.words):
            if word.start >= start - 0.01 and word.end <= start + duration:
                text = word.word
                if not self.agree or word.end > start + duration - self.unsure_s:
                    text = f" guess{len(self.calls)}x{index}"
                heard.append(Word(word.start - start, word.end - start, text, 0.5))
        segments = [Segment(start=0.0, end=duration, text="".join(w.word for w in heard), words=heard)]
        return iter(segments if heard else []), TranscriptionInfo("en", None, duration)


def ramp(seconds: float) -> np.ndarray:
    return (np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE).astype(np.float32)


def play(stream: StreamingTranscriber, audio: np.ndarray, chunk_s: float = 1.0) -> list:
    step = int(chunk_s * SAMPLE_RATE)
    events = []
    for begin in range(0, len(audio), step):
        events += stream.feed(audio[begin:begin + step])
    return events + stream.flush()


def test_decodes_ask_for_the_short_window_unless_it_is_turned_off():
    for options, expected in ((StreamingOptions(vad=False), True),
                              (StreamingOptions(vad=False, short_window=False), False)):
        fake = ScriptedTranscriber(script_words(10))
        play(StreamingTranscriber(fake, options), ramp(5))
        assert len(fake.short_windows) >= 4 and set(fake.short_windows) == {expected}


def test_agreement_is_the_common_prefix_ignoring_case_and_punctuation():
    words = lambda *texts: [Word(i, i + 1, text, 1.0) for i, text in enumerate(texts)]  # noqa: E731
    assert agreed_prefix(words(" The", " cat", " sat"), words(" the", " cat,", " sits", " down")) == 2
    assert agreed_prefix([], words(" a")) == 0
    # Unspaced text agrees by characters: the same characters in other tokens agree, a word cut by
    # the first difference does not.
    assert agreed_prefix(words("今天", "天气", "很好"), words("今", "天天", "气", "很差")) == 3
    assert agreed_prefix(words("今天", "天气"), words("今天天", "气", "很好")) == 2
    committed = words(" one", " two", " three")
    assert [w.word for w in drop_repeated(committed, words(" two", " three", " four"))] == [" four"]
    assert [w.word for w in drop_repeated(committed, words(" four"))] == [" four"]


def test_words_said_again_are_found_by_their_text_when_their_times_moved():
    def words(*texts, start=0.0, step=0.4):
        return [Word(start + i * step, start + i * step + 0.3, text, 1.0) for i, text in enumerate(texts)]

    committed = words(" the", " cat", " sat.")                        # ends at 1.1 s
    # Said again with its times 0.5 s later (past the committed end), one word misheard: cut by text.
    assert said_again(committed, words(" The", " cats", " sat.", " On", " the", " mat.", start=0.5)) == 3
    assert said_again(committed, words(" the", " cat", " sat", " sat", start=0.5)) == 3
    # Not said again (one word in common by chance): too little matches to tell, the times decide.
    assert said_again(committed, words(" On", " the", " mat.", start=1.3)) is None
    assert said_again([], words(" a")) is None
    # Unspaced text: the second decode groups the characters into other tokens.
    chinese = words("今天", "天气", "很好", "。")
    assert said_again(chinese, words("今", "天天", "气很", "好", "。", "我们", "出去", start=0.2)) == 5
    assert said_again(chinese, words("今天天", "气", "很好", "我们", start=0.2)) == 3


def test_committed_words_are_the_script_once_each_on_the_stream_clock():
    script = script_words(140)                  # 56.5 s of speech, a sentence every 3.2 s
    fake = ScriptedTranscriber(script)
    stream = StreamingTranscriber(fake, StreamingOptions(vad=False, trim_s=6, max_buffer_s=12))
    events = play(stream, ramp(58))
    assert [w.word for w in stream.committed] == [w.word for w in script]
    assert [(w.start, w.end) for w in stream.committed] == [(w.start, w.end) for w in script]
    assert "guess" not in stream.committed_text
    commits = [e for e in events if e.kind == "commit"]
    # Before the final flush every word was committed only once two decodes agreed on it, so
    # after its end at least one more chunk had to arrive.
    for event in commits[:-1]:
        assert event.received_s >= event.end + 1.0 - 1e-6, event
    # Trimmed at sentence ends: the buffer never grows much past trim_s, and its start matches
    # the audio the model got.
    assert max(duration for _, duration, _ in fake.calls) <= 6 + 3.2 + 1.0
    # The prompt is the committed text before the buffer.
    start, _, prompt = fake.calls[-1]
    before = "".join(w.word for w in script if w.end <= start + 1e-3).strip()
    assert prompt and before.endswith(prompt)
    # A partial is what follows the commits so far: words not yet agreed on, the unsure one among them.
    committed_end, partials = 0.0, 0
    for event in events:
        if event.kind == "commit":
            committed_end = event.end
        elif event.kind == "partial" and event.text:
            partials += 1
            assert event.start > committed_end, event
    assert partials > 40 and any("guess" in e.text for e in events if e.kind == "partial")


def test_without_sentence_ends_the_buffer_is_cut_at_max_buffer_s():
    fake = ScriptedTranscriber(script_words(100, sentence=0))
    stream = StreamingTranscriber(fake, StreamingOptions(vad=False, trim_s=5, max_buffer_s=10))
    play(stream, ramp(42))
    assert len(stream.committed) == 100
    assert max(duration for _, duration, _ in fake.calls) <= 10 + 1.0


def test_hypotheses_that_never_agree_are_committed_at_max_buffer_s():
    fake = ScriptedTranscriber(script_words(100, sentence=0), agree=False)
    stream = StreamingTranscriber(fake, StreamingOptions(vad=False, trim_s=5, max_buffer_s=10))
    events = play(stream, ramp(42))
    assert max(duration for _, duration, _ in fake.calls) <= 10 + 1.0
    # Forced commits keep the words' times in order and never overlap.
    ends = [w.end for w in stream.committed]
    starts = [w.start for w in stream.committed]
    assert all(b >= a for a, b in zip(ends, starts[1:]))
    assert any(e.kind == "commit" for e in events[:-3])
    assert events[-2].kind == "end" and events[-2].text == "".join(w.word for w in stream.committed)


def test_bad_options_and_backends_without_word_times_are_refused():
    with pytest.raises(TranscriptionError, match="max_buffer_s"):
        StreamingTranscriber(ScriptedTranscriber([]), StreamingOptions(vad=False, trim_s=40, max_buffer_s=50))
    with pytest.raises(TranscriptionError, match="pause_commit_s"):
        StreamingTranscriber(ScriptedTranscriber([]), StreamingOptions(vad=False, pause_commit_s=0))
    with pytest.raises(TranscriptionError, match=r"context_gap_s must be between 0 and 30 - max_buffer_s = 10 s"):
        StreamingTranscriber(ScriptedTranscriber([]), StreamingOptions(vad=False, context_gap_s=12))
    fake = ScriptedTranscriber([])
    fake.unsupported = ("word_timestamps",)
    with pytest.raises(TranscriptionError, match="word timestamps"):
        StreamingTranscriber(fake, StreamingOptions(vad=False))


@pytest.fixture(scope="module")
def tiny_en():
    from utils.inference.registry import load_transcriber

    return load_transcriber("ct2", TINY_EN, compute_type="int8")


def test_real_stream_matches_the_offline_transcript_and_skips_silence(tiny_en):
    # Two clips with 2.5 s of silence between them and 1 s before: two utterances.
    first, second = load_audio(english_clip(0)[0]), load_audio(english_clip(2)[0])
    gap = np.zeros(int(2.5 * SAMPLE_RATE), dtype=np.float32)
    audio = np.concatenate([gap[:SAMPLE_RATE], first, gap, second])
    segments, _ = tiny_en.transcribe(audio, TranscribeOptions(language="en"))
    offline = " ".join(segment.text for segment in segments)
    reference = f"{english_clip(0)[1]} {english_clip(2)[1]}"

    stream = StreamingTranscriber(tiny_en, StreamingOptions(language="en"))
    events = play(stream, audio)
    # tiny.en mishears a few names either way; live it must stay that close to its offline self.
    assert wer(offline, stream.committed_text) <= 0.25, (offline, stream.committed_text)
    assert wer(reference, stream.committed_text) <= wer(reference, offline) + 0.1, stream.committed_text
    assert {"train", "minutes", "sister", "town"} <= set(normalize(stream.committed_text).split())
    # Word times are on the stream's clock: the second clip's words come after its start.
    second_start = 1.0 + len(first) / SAMPLE_RATE + 2.5
    sister = next(w for w in stream.committed if "sister" in w.word.lower())
    assert second_start < sister.start < second_start + 1.5
    # The first utterance was closed by the silence, before the second one began.
    assert any(e.kind == "commit" and "minutes" in e.text.lower() and e.received_s < second_start
               for e in events)


def test_a_repetition_loop_is_cut_after_its_first_occurrence():
    def words(*texts):
        return [Word(i, i + 1, text, 1.0) for i, text in enumerate(texts)]

    looped = words(" 今", "天", "的", "的", "的", "的", "的")
    assert [w.word for w in cut_loop(looped)] == [" 今", "天", "的"]
    phrase = words(" I", " said", " no", " no,", " go", " go", " go", " go", " go")
    assert [w.word for w in cut_loop(phrase)] == [" I", " said", " no", " no,", " go"]
    two = words(" a", " b", " c", " d", " c", " d", " c", " d", " e")
    assert [w.word for w in cut_loop(two)] == [" a", " b", " c", " d"]
    fine = words(" thank", " you", " thank", " you")
    assert cut_loop(fine) == fine
    # Mandarin: a five-character phrase again and again, its tokens grouped differently each time.
    phrase = words(" 这是", "电脑", "筋车的", "电", "脑筋", "车的", "电脑筋", "车", "的", "电脑")
    assert [w.word for w in cut_loop(phrase)] == [" 这是", "电脑", "筋车的"]
    sentence = words(" 我们", "今天", "去", "公园", "，", "明天", "去", "学校", "。")
    assert cut_loop(sentence) == sentence


def scripted_speech(stream: StreamingTranscriber, spans: list[tuple[float, float]]) -> None:
    """Give `stream` a VAD that hears speech in `spans` (stream seconds; the ramp's values are
    its times, so a frame's first sample says where it is)."""
    stream._speech_flags = lambda frames: [
        any(begin <= float(frames[i]) <= end for begin, end in spans) for i in range(0, len(frames), 512)]


def test_a_pause_commits_the_utterance_and_its_close_does_not_decode_again():
    first = script_words(11, sentence=0, start=0.4)        # 0.4 to 4.7 s
    second = script_words(6, sentence=0, start=10.2)       # 10.2 to 12.5 s
    second = [Word(w.start, w.end, w.word.replace(" w", " v"), w.probability) for w in second]
    fake = ScriptedTranscriber(first + second, unsure_s=0.25)
    stream = StreamingTranscriber(fake, StreamingOptions())
    scripted_speech(stream, [(0.4, 4.7), (10.2, 12.5)])
    events = play(stream, ramp(15))
    assert [w.word for w in stream.committed] == [w.word for w in first + second]
    # The chunk ending at 5 s ends in 0.3 s of pause: that decode commits the whole first utterance
    # (agreement alone would leave its last words to the close), and the close at 5.3 s, with only
    # silence since, commits nothing new and decodes nothing.
    commits = [e for e in events if e.kind == "commit"]
    last_of_first = next(e for e in commits if e.words[-1].word == first[-1].word)
    assert abs(last_of_first.received_s - 5.0) < 0.05, last_of_first
    assert not [call for call in fake.calls if 5.0 < call[0] + call[1] < 10.0], fake.calls
    # The second utterance is first decoded at the first chunk end with a chunk of audio in the
    # buffer (11 s: 0.8 s of speech and the 0.3 s before it), not once a whole chunk of speech came.
    first_call = next(call for call in fake.calls if call[0] > 9.0)
    assert abs(first_call[0] + first_call[1] - 11.0) < 0.05, first_call
    ends = [e for e in events if e.kind == "end"]
    assert [e.text for e in ends] == ["".join(w.word for w in first), "".join(w.word for w in second)]


def test_flush_right_after_a_decode_commits_the_last_hypothesis_without_decoding():
    script = script_words(10, sentence=0)
    fake = ScriptedTranscriber(script)
    stream = StreamingTranscriber(fake, StreamingOptions(vad=False))
    events = []
    for begin in range(0, 5 * SAMPLE_RATE, SAMPLE_RATE):
        events += stream.feed(ramp(5)[begin:begin + SAMPLE_RATE])
    partial, calls = events[-1], len(fake.calls)
    assert partial.kind == "partial" and partial.text == " w7 w8 w9"
    closing = stream.flush()
    assert len(fake.calls) == calls
    assert closing[0].kind == "commit" and closing[0].text == partial.text
    assert [w.word for w in stream.committed] == [w.word for w in script]


def test_short_window_encodes_the_clips_length_and_reads_it_alike(tiny_en, monkeypatch):
    import faster_whisper

    seen = []
    encode = faster_whisper.WhisperModel.encode

    def recording(self, features):
        seen.append(features.shape[-1])
        return encode(self, features)

    monkeypatch.setattr(faster_whisper.WhisperModel, "encode", recording)
    # Three clips, as a live buffer holds them: 0.3 s of lead-in (the VAD's padding), 1 s between.
    lead, gap = np.zeros(int(0.3 * SAMPLE_RATE), np.float32), np.zeros(SAMPLE_RATE, np.float32)
    clips = [english_clip(i) for i in (0, 2, 4)]
    audio = np.concatenate([lead] + [part for path, _ in clips for part in (load_audio(path), gap)])
    reference = " ".join(text for _, text in clips)
    full, _ = tiny_en.transcribe(audio, TranscribeOptions(language="en"))
    full = " ".join(s.text for s in full)
    short, _ = tiny_en.transcribe(audio, TranscribeOptions(language="en", short_window=True))
    short = " ".join(s.text for s in short)
    # The clips' 10 ms frames and 3 s after them, in whole seconds; a full window is 3000.
    expected = -(-(len(audio) // 160 + 300) // 100) * 100
    assert seen == [3000, expected] and expected < 2500, seen
    seen.clear()
    list(tiny_en.transcribe(audio[:2 * SAMPLE_RATE], TranscribeOptions(language="en", short_window=True))[0])
    assert seen == [1000], seen    # never under 10 s
    assert wer(reference, short) <= wer(reference, full) + 0.1, (full, short)
    # Over a window's length it decodes as usual.
    long = np.concatenate([audio] * 9)
    seen.clear()
    list(tiny_en.transcribe(long, TranscribeOptions(language="en", short_window=True))[0])
    assert seen[0] == 3000, seen


def test_context_keeps_the_utterance_before_in_the_buffer_without_committing_it_twice(tiny_en):
    first, second = load_audio(english_clip(1)[0]), load_audio(english_clip(2)[0])
    gap = np.zeros(SAMPLE_RATE, dtype=np.float32)
    audio = np.concatenate([gap[:SAMPLE_RATE // 2], first, gap, second, gap])
    reference = f"{english_clip(1)[1]} {english_clip(2)[1]}"
    stream = StreamingTranscriber(tiny_en, StreamingOptions(language="en", context_gap_s=2.0))
    buffers = []
    decode = stream._decode

    def recording():
        buffers.append(stream.buffer_s)
        return decode()

    stream._decode = recording
    events = play(stream, audio)
    assert wer(reference, stream.committed_text) <= 0.25, stream.committed_text
    # Each word once: as many words as the two sentences have, give or take one.
    assert abs(len(stream.committed_text.split()) - len(reference.split())) <= 1, stream.committed_text
    # Two utterances, and the second one's decodes held the first one's audio too.
    assert [e.kind for e in events].count("end") == 2
    second_start = 0.5 + len(first) / SAMPLE_RATE + 1.0
    assert max(buffers) > len(second) / SAMPLE_RATE + 1.0, buffers
    sister = next(w for w in stream.committed if "sister" in w.word.lower())
    assert second_start < sister.start < second_start + 1.5


def test_benchmark_policy_pass_reports_latency_and_error_rates(tmp_path):
    """tools/benchmark_streaming.py --policy_only on 12 s of the shipped clips: the no-clock pass's table
    and json, with the committed text's error rates against offline decoding and the reference."""
    import json
    import subprocess
    import sys

    from conftest import REPO

    prefix = tmp_path / "stream"
    result = subprocess.run([sys.executable, "tools/benchmark_streaming.py", f"--model_path={TINY_EN}",
                             "--english_s=12", "--mandarin=False", "--policy_only", f"--output_prefix={prefix}"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = json.loads((tmp_path / "stream.json").read_text())["rows"]
    assert row["audio"] == "English" and row["metric"] == "wer" and 12 <= row["seconds"] < 20
    assert 0.5 < row["policy_latency_median_s"] <= row["policy_latency_p90_s"] < 5
    assert row["policy_vs_reference"] <= row["offline_vs_reference"] + 0.15 and row["policy_vs_offline"] <= 0.2
    lines = [line for line in (tmp_path / "stream.md").read_text().splitlines() if line.startswith("| English")]
    assert lines == [f"| English ({row['seconds']:g} s) | {row['policy_latency_median_s']} / "
                     f"{row['policy_latency_p90_s']} | {row['cpu_s_per_decode']} | "
                     f"WER {row['policy_vs_offline']:.1%} | WER {row['policy_vs_reference']:.1%} | "
                     f"WER {row['offline_vs_reference']:.1%} |"]
