"""infer_ct2.py and tools/hf_to_ct2.py with the real faster-whisper."""
import json
import subprocess
import sys

import numpy as np
import pytest
from transcription_audio import REPO, english_clip, english_samples, long_english, wer

from utils.inference.registry import load_transcriber
from utils.inference.transcriber import TranscribeOptions

WHISPER_BASE_CT2 = REPO / "models" / "whisper-base-ct2"


def run(script, *args):
    return subprocess.run([sys.executable, str(REPO / script), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def ct2_base():
    if not (WHISPER_BASE_CT2 / "model.bin").exists():
        pytest.fail(f"{WHISPER_BASE_CT2} is missing: run `make models`")
    return load_transcriber("ct2", str(WHISPER_BASE_CT2), compute_type="int8")


def test_word_timestamps_and_json(tmp_path):
    path, sentence = english_clip(3)
    result = run("infer_ct2.py", f"--audio_path={path}", f"--model_path={WHISPER_BASE_CT2}", "--use_int8",
                 "--word_timestamps", "--output_format=json", f"--output_dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    assert "compute_type = 'int8'" in result.stdout   # the effective configuration is printed
    data = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert data["language"] == "en" and data["language_probability"] > 0.5
    assert wer(sentence, data["text"]) <= 0.2
    words = [w for s in data["segments"] for w in s["words"]]
    assert len(words) >= len(sentence.split()) - 2
    assert all(w["start"] <= w["end"] for w in words)
    assert all(a["start"] <= b["start"] for a, b in zip(words, words[1:]))


def test_contradicting_flags_are_rejected():
    path, _ = english_clip(0)
    result = run("infer_ct2.py", f"--audio_path={path}", "--use_int8", "--compute_type=float32")
    assert result.returncode == 2 and "contradict" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("flags, expected", [
    (["--batch_size=8", "--output_format=txt"], False),        # text only, batched: no timestamp tokens
    (["--batch_size=8", "--output_format=none"], False),
    (["--batch_size=8"], True),                                # all formats: the subtitles need the times
    (["--batch_size=8", "--output_format=srt"], True),
    (["--batch_size=8", "--output_format=json"], True),        # its segments carry start and end
    (["--batch_size=8", "--output_format=txt", "--word_timestamps"], True),
    (["--output_format=txt"], True),                           # sequential: it seeks by its timestamps
    (["--batch_size=8", "--output_format=txt", "--timestamps=auto"], False),
    (["--batch_size=8", "--output_format=txt", "--timestamps"], True),     # asked for: honoured
    (["--batch_size=8", "--output_format=srt", "--timestamps=False"], False),
])
def test_timestamps_are_decoded_when_an_output_needs_them(flags, expected):
    import infer_ct2
    from utils.core.cli import parse_args

    args = parse_args(infer_ct2.InferCT2Arguments, ["--audio_path=a.wav", *flags])
    assert args.timestamps is expected
    assert args.transcribe_options(timestamps=args.timestamps).timestamps is expected


@pytest.mark.slow
def test_batched_text_output_reads_whole_vad_chunks(tmp_path):
    """infer_ct2.py --batch_size --vad_filter --output_format=txt decodes without timestamp tokens: one
    segment per VAD chunk, the same words; asked for SRT it keeps the sentence-length cues."""
    path, duration = long_english(tmp_path / "long.wav", 45.0)
    flags = [f"--audio_path={path}", f"--model_path={WHISPER_BASE_CT2}", "--use_int8", "--batch_size=4",
             "--vad_filter", "--language=en", f"--output_dir={tmp_path}"]
    text_run = run("infer_ct2.py", *flags, "--output_format=txt")
    assert text_run.returncode == 0, text_run.stderr
    assert "timestamps = False" in text_run.stdout
    lines = (tmp_path / "long.txt").read_text().splitlines()
    assert len(lines) == 2                 # 45 s of speech in two windows of at most 30 s
    spoken, filled = [], 0.0              # the clips long_english put one after another (0.6 s apart)
    for sample in english_samples():
        if filled >= 45.0:
            break
        spoken.append(sample["sentence"])
        filled += sample["duration"] + 0.6
    assert wer(" ".join(spoken), " ".join(lines)) <= 0.2

    srt_run = run("infer_ct2.py", *flags, "--output_format=srt")
    assert srt_run.returncode == 0, srt_run.stderr
    assert "timestamps = True" in srt_run.stdout
    cues = (tmp_path / "long.srt").read_text().strip().split("\n\n")
    assert len(cues) >= 6
    def seconds(stamp):
        hours, minutes, rest = stamp.split(":")
        return 3600 * int(hours) + 60 * int(minutes) + float(rest.replace(",", "."))
    spans = [[seconds(t) for t in cue.splitlines()[1].split(" --> ")] for cue in cues]
    assert all(0 <= start < end <= duration + 0.01 and end - start < 15 for start, end in spans)


def test_transformers_folder_is_refused_with_a_hint(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    path, _ = english_clip(0)
    result = run("infer_ct2.py", f"--audio_path={path}", f"--model_path={tmp_path}")
    assert result.returncode == 2 and "tools/hf_to_ct2.py" in result.stderr


@pytest.mark.slow
def test_batched_pipeline_matches_sequential(tmp_path, ct2_base):
    path, duration = long_english(tmp_path / "long.wav", 45.0)
    options = TranscribeOptions(language="en")
    sequential = list(ct2_base.transcribe(path, options)[0])
    batched_model = load_transcriber("ct2", str(WHISPER_BASE_CT2), compute_type="int8", batch_size=4)
    batched = list(batched_model.transcribe(path, options)[0])
    def text(segments):
        return " ".join(s.text for s in segments)
    assert wer(text(sequential), text(batched)) <= 0.1
    assert all(a.end <= b.start for a, b in zip(batched, batched[1:]))
    assert batched[-1].end > duration - 5


@pytest.mark.parametrize("fallback", [True, False])
def test_batched_window_that_loops_is_decoded_again(tmp_path, fallback):
    """The batched pipeline decodes each window once, at temperature 0. A window that falls into a
    repetition loop (forced here: the second window's batched text replaced by one) goes through the
    sequential decoder again, with its timestamps on the file's clock; the other window is kept.
    With the fallback off (temperature_increment_on_fallback=0) the batched text stays."""
    from faster_whisper.transcribe import Segment as FwSegment

    path, duration = long_english(tmp_path / "long.wav", 45.0)
    model = load_transcriber("ct2", str(WHISPER_BASE_CT2), compute_type="int8", batch_size=4)
    batched = model.pipeline.transcribe
    honest = {}

    def second_window_loops(audio, **kwargs):
        segments, info = batched(audio, **kwargs)
        segments = list(segments)
        first = segments[0].seek
        honest["first"] = [s for s in segments if s.seek == first]
        honest["second"] = [s for s in segments if s.seek != first]
        seek, start = honest["second"][0].seek, honest["second"][0].start
        loop = FwSegment(id=99, seek=seek, start=start, end=duration, text=" the" * 120, tokens=[],
                         avg_logprob=-0.1, compression_ratio=20.0, no_speech_prob=0.0, words=None, temperature=0.0)
        return iter(honest["first"] + [loop]), info

    model.pipeline.transcribe = second_window_loops
    options = TranscribeOptions(language="en", temperature_increment_on_fallback=0.2 if fallback else 0)
    segments = list(model.transcribe(path, options)[0])
    def text(segs):
        return " ".join(s.text.strip() for s in segs)
    first = [s for s in segments if s.end <= honest["first"][-1].end + 0.01]
    assert text(first) == text(honest["first"])          # the window that did not loop is kept as it was
    rest = segments[len(first):]
    if not fallback:
        assert text(rest) == ("the " * 120).strip()
        return
    assert "the the the" not in text(rest)
    assert wer(text(honest["second"]), text(rest)) <= 0.3   # decoded again (at temperature 0.2: sampled)
    assert rest[0].start >= honest["second"][0].start - 1.0 and rest[-1].end <= duration + 0.5
    assert all(a.start <= a.end <= b.start for a, b in zip(rest, rest[1:]))


def test_vad_filter_skips_silence(ct2_base):
    path, sentence = english_clip(4)
    from utils.core.audio import SAMPLE_RATE, load_audio

    speech = load_audio(path)
    audio = np.concatenate([np.zeros(20 * SAMPLE_RATE, np.float32), speech])
    segments, info = ct2_base.transcribe(audio, TranscribeOptions(language="en", vad_filter=True))
    segments = list(segments)
    assert wer(sentence, " ".join(s.text for s in segments)) <= 0.35   # espeak speech, base model
    assert segments[0].start >= 19.0   # times stay on the original clock after VAD


@pytest.mark.slow
def test_hf_to_ct2_conversion_keeps_language_detection(tmp_path, whisper_base_dir, ct2_base):
    """Convert the transformers whisper-base; faster-whisper must load it offline, detect the
    language and read as the shipped CTranslate2 model does."""
    out = tmp_path / "converted-ct2"
    result = run("tools/hf_to_ct2.py", f"--model_dir={whisper_base_dir}", f"--output_dir={out}",
                 "--quantization=int8")
    assert result.returncode == 0, result.stderr
    assert {"model.bin", "config.json", "tokenizer.json", "preprocessor_config.json"} <= {
        p.name for p in out.iterdir()}
    assert json.loads((out / "preprocessor_config.json").read_text())["feature_size"] == 80
    assert len(json.loads((out / "config.json").read_text())["lang_ids"]) == 99
    path, sentence = english_clip(5)
    converted = load_transcriber("ct2", str(out))
    segments, info = converted.transcribe(path)
    assert info.language == "en" and info.language_probability > 0.5
    shipped = " ".join(s.text for s in ct2_base.transcribe(path)[0])
    assert wer(shipped, " ".join(s.text for s in segments)) <= 0.1
    again = run("tools/hf_to_ct2.py", f"--model_dir={whisper_base_dir}", f"--output_dir={out}")
    assert again.returncode == 2 and "--force" in again.stderr


def test_hf_to_ct2_repairs_missing_language_ids(tmp_path, tiny_whisper_dir):
    """A fine-tune whose generation config lost lang_to_id still converts with language ids."""
    import shutil

    model = tmp_path / "tiny"
    shutil.copytree(tiny_whisper_dir, model)
    generation = json.loads((model / "generation_config.json").read_text())
    generation.pop("lang_to_id", None)
    (model / "generation_config.json").write_text(json.dumps(generation))
    (model / "preprocessor_config.json").unlink()
    out = tmp_path / "tiny-ct2"
    result = run("tools/hf_to_ct2.py", f"--model_dir={model}", f"--output_dir={out}", "--quantization=float32")
    assert result.returncode == 0, result.stderr
    assert len(json.loads((out / "config.json").read_text())["lang_ids"]) == 99
    assert (out / "preprocessor_config.json").exists()
    from utils.core.languages import LANGUAGES

    # Noise, not silence: silence is answered without running the model, so nothing is detected.
    noise = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    info = load_transcriber("ct2", str(out)).transcribe(noise)[1]
    assert info.language in LANGUAGES and 0 < info.language_probability <= 1
