"""AndroidDemo's :core and native layer, proven on this machine (AndroidDemo/tools/android_core.sh).

This module prepares what the JUnit tests compare against: GGML files written by convert-ggml.py (whisper-base
as f16, q8_0 and q5_0, and a merged LoRA fine-tune), pywhispercpp's transcripts and language probabilities for
them, and WAV variants with the samples soundfile and soxr (utils.core.audio.load_audio) give. Then it runs the
tools script, which builds libwhisper_jni for this machine, :core and :app's plain-Kotlin parts with kotlinc, and
runs their JUnit tests on this JVM, and checks their results. The first run builds whisper.cpp (about 1.5 minutes
on two cores); later runs reuse the build.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from transcription_audio import english_clip, long_english

from utils.core.audio import SAMPLE_RATE, load_audio, save_wav
from utils.core.files import sha256_of

pytestmark = pytest.mark.slow

ANDROID = REPO / "AndroidDemo"
SCRIPT = ANDROID / "tools" / "android_core.sh"
# One thread for both engines: on a busy two-core machine a second thread mostly waits for the first, which
# makes every run several times slower and its time unpredictable; the text does not depend on it.
THREADS = 1
# whisper.cpp's quantized types that convert-ggml.py writes, for a model that fits a phone.
QUANTIZED = ("q8_0", "q5_0")
# The WAV variants: (name, subtype, channels, rate, container). Every sample type at 48 kHz stereo and at
# 16 kHz mono, 16-bit PCM at the other common rates, and a WAVE_FORMAT_EXTENSIBLE file with three channels.
SUBTYPES = {"u8": "PCM_U8", "s16": "PCM_16", "s24": "PCM_24", "s32": "PCM_32", "f32": "FLOAT", "f64": "DOUBLE"}
VARIANTS = (
    [(f"{key}_48000_stereo", subtype, 2, 48000, "WAV") for key, subtype in SUBTYPES.items()]
    + [(f"{key}_16000_mono", subtype, 1, 16000, "WAV") for key, subtype in SUBTYPES.items()]
    + [(f"s16_{rate}_{layout}", "PCM_16", channels, rate, "WAV")
       for rate in (8000, 22050, 44100) for layout, channels in (("mono", 1), ("stereo", 2))]
    + [("f32_22050_mono", "FLOAT", 1, 22050, "WAV"), ("s24_44100_3ch_extensible", "PCM_24", 3, 44100, "WAVEX")]
)


def missing_tools() -> list[str]:
    return [tool for tool in ("java", "javac", "cmake", "c++", "npm") if shutil.which(tool) is None]


def export(model_dir: Path, output_path: Path, quantization: str = "f16") -> Path:
    result = subprocess.run([sys.executable, str(REPO / "convert-ggml.py"), f"--model_dir={model_dir}",
                             f"--output_path={output_path}", f"--quantization={quantization}"], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return output_path


def merged_lora(whisper_base_dir: Path, output_dir: Path) -> Path:
    """A fine-tune as finetune.py + merge_lora.py leave it: LoRA (random B, so it changes weights), merged, saved."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model = WhisperForConditionalGeneration.from_pretrained(whisper_base_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.01)
    peft_model.merge_and_unload().save_pretrained(output_dir)
    WhisperProcessor.from_pretrained(whisper_base_dir).save_pretrained(output_dir)
    return output_dir


def pywhispercpp_reference(model_path: Path, audio: np.ndarray, language: str) -> tuple[str, str, float]:
    """pywhispercpp's segments ("t0|t1|text" lines, 10 ms ticks), and the language it detects with its probability
    (whisper-base hears Thai in the first 30 s of dataset/test.wav, so the detection is compared, not its answer)."""
    from pywhispercpp.model import Model

    model = Model(str(model_path), n_threads=THREADS, print_progress=False, print_realtime=False,
                  redirect_whispercpp_logs_to=None)
    segments = model.transcribe(audio, language=language)
    (detected, probability), _ = model.auto_detect_language(audio, n_threads=THREADS)
    return "\n".join(f"{s.t0}|{s.t1}|{s.text}" for s in segments), detected, float(probability)


def write_variants(folder: Path, speech: np.ndarray) -> None:
    import soundfile
    import soxr

    folder.mkdir()
    for name, subtype, channels, rate, container in VARIANTS:
        signal = speech if rate == SAMPLE_RATE else soxr.resample(speech, SAMPLE_RATE, rate).astype(np.float32)
        # Distinct channels (scaled, delayed copies), so that mixing to mono is tested too.
        data = np.stack([0.9 ** c * np.roll(signal, 37 * c) for c in range(channels)], axis=1)
        path = folder / f"{name}.wav"
        soundfile.write(path, np.clip(data, -1.0, 0.999), rate, subtype=subtype, format=container)
        raw, _ = soundfile.read(path, dtype="float32", always_2d=True)
        raw.astype("<f4").tofile(folder / f"{name}.raw.f32")
        load_audio(path).astype("<f4").tofile(folder / f"{name}.16k.f32")
    (folder / "variants.txt").write_text("\n".join(v[0] for v in VARIANTS) + "\n", encoding="utf-8")


def java_properties(values: dict) -> str:
    """Lines that java.util.Properties.load(Reader) reads back as `values`."""
    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")

    return "".join(f"{key}={escape(str(value))}\n" for key, value in values.items())


def read_results(path: Path) -> dict:
    """A results file the JUnit tests wrote ("key<TAB>value" lines, backslash escapes)."""
    def unescape(text: str) -> str:
        out, i = [], 0
        while i < len(text):
            if text[i] == "\\" and i + 1 < len(text):
                out.append({"n": "\n", "t": "\t", "\\": "\\"}[text[i + 1]])
                i += 2
            else:
                out.append(text[i])
                i += 1
        return "".join(out)

    return dict(map(unescape, line.split("\t", 1)) for line in path.read_text(encoding="utf-8").splitlines())


@pytest.fixture(scope="module")
def android_run(tmp_path_factory, whisper_base_dir, artifacts_dir):
    """Inputs prepared, the tools script run once; returns (results folder, inputs, script output)."""
    missing = missing_tools()
    if missing:
        pytest.fail(f"AndroidDemo's host build needs {', '.join(missing)}: see AndroidDemo/README.md")
    work = tmp_path_factory.mktemp("android-core")
    inputs_dir, results_dir = work / "inputs", work / "results"
    inputs_dir.mkdir()
    finetune_dir = merged_lora(whisper_base_dir, work / "merged")
    models = {"model.base": export(whisper_base_dir, inputs_dir / "ggml-base.bin"),
              "model.finetuned": export(finetune_dir, inputs_dir / "ggml-finetuned.bin")}
    for quantization in QUANTIZED:
        models[f"model.{quantization}"] = export(whisper_base_dir, inputs_dir / f"ggml-base-{quantization}.bin",
                                                 quantization)

    en_path, _ = english_clip(6)
    en_wav = inputs_dir / "en.wav"
    save_wav(en_wav, load_audio(en_path))
    long_wav, _ = long_english(inputs_dir / "en_25s.wav", 25)
    audio = {"en": (en_wav, "en"), "en_25s": (Path(long_wav), "en"), "zh": (REPO / "dataset" / "test.wav", "zh")}
    # case -> (model, audio). The quantized files transcribe English several sentences long, and are held to the
    # same text as pywhispercpp's, segment by segment, with times within a second (the JUnit test says why):
    # whisper-base's Mandarin is too unsure of itself (about 70 % CER in docs/inference.md) for a quantized file to
    # give the very same characters in two builds of whisper.cpp for different instruction sets (AVX-512 here,
    # AVX2 in the wheel).
    cases = {"base.en": ("model.base", "en"), "base.zh": ("model.base", "zh"),
             "finetuned.en": ("model.finetuned", "en"),
             "q8_0.en_25s": ("model.q8_0", "en_25s"), "q5_0.en_25s": ("model.q5_0", "en_25s")}
    values = {**models, "cases": ",".join(cases), "detect": "base.en,base.zh",
              "whisper.version": pinned_whisper_version(), "threads": THREADS}
    for case, (model, clip) in cases.items():
        path, language = audio[clip]
        reference, detected, probability = pywhispercpp_reference(models[model], load_audio(path), language)
        values.update({f"case.{case}.model": model,
                       f"case.{case}.audio": path, f"case.{case}.language": language,
                       f"case.{case}.reference": reference, f"case.{case}.detect_language": detected,
                       f"case.{case}.detect_probability": probability})
        if model in (f"model.{q}" for q in QUANTIZED):
            values[f"case.{case}.compare"] = "text"
    assert values["case.base.en.detect_language"] == "en"
    write_variants(inputs_dir / "wav", load_audio(en_path)[: int(2.5 * SAMPLE_RATE)])
    (inputs_dir / "inputs.properties").write_text(java_properties(values), encoding="utf-8")

    result = subprocess.run(["bash", str(SCRIPT), f"--inputs={inputs_dir}", f"--results={results_dir}"], cwd=REPO,
                            capture_output=True, text=True, timeout=3000)
    report = artifacts_dir / "android-core.log"
    report.write_text(result.stdout + result.stderr, encoding="utf-8")
    assert result.returncode == 0, f"{SCRIPT.name} failed (full output in {report}):\n" + result.stdout[-6000:] \
        + result.stderr[-4000:]
    return results_dir, values, result.stdout


def pinned_whisper_version() -> str:
    for line in (ANDROID / "whisper-cpp.properties").read_text(encoding="utf-8").splitlines():
        if line.startswith("whisper.cpp.version="):
            return line.split("=", 1)[1].strip()
    raise AssertionError("whisper-cpp.properties has no whisper.cpp.version")


def junit_statuses(report: Path) -> dict:
    rows = [line.split("\t") for line in report.read_text(encoding="utf-8").splitlines()]
    statuses = {row[0]: row[1] for row in rows}
    assert set(statuses.values()) == {"passed"}, [row for row in rows if row[1] != "passed"]
    return statuses


def test_every_junit_test_ran_and_passed(android_run):
    results_dir, _, stdout = android_run
    statuses = junit_statuses(results_dir / "junit.tsv")
    assert len(statuses) >= 40
    assert f"{len(statuses)} passed, 0 failed, 0 skipped" in stdout
    assert {"ModelCheckTest.acceptsWhatConvertGgmlWrites", "WhisperContextTest.transcribesLikePywhispercpp",
            "ModelStoreTest.aDownloadCutShortIsIncompleteByTheServersLength"} <= set(statuses)


def test_app_state_tests_ran_and_passed(android_run):
    """:app's plain-Kotlin parts (AppState.kt, Engine.kt), compiled against :core, and their unit tests."""
    results_dir, _, stdout = android_run
    statuses = junit_statuses(results_dir / "junit-app.tsv")
    assert {name.split(".")[0] for name in statuses} == {"AppStateTest"}
    assert len(statuses) >= 6
    assert f"{len(statuses)} passed, 0 failed, 0 skipped" in stdout


def test_transcripts_equal_pywhispercpp(android_run):
    results_dir, values, _ = android_run
    transcripts = read_results(results_dir / "transcripts.tsv")
    for case in values["cases"].split(","):
        reference = " ".join(line.split("|", 2)[2] for line in values[f"case.{case}.reference"].splitlines())
        assert transcripts[f"{case}.text"] == reference
        assert reference.strip()
    for quantization in QUANTIZED:
        case = f"{quantization}.en_25s"
        assert len(values[f"case.{case}.reference"].splitlines()) >= 2
        print(f"\n{case}: {transcripts[f'{case}.segments']} segments, the same text as pywhispercpp, times within "
              f"{transcripts[f'{case}.max_time_difference_ms']} ms")
    # The fine-tune and the quantized files are other models (their weights differ), exported the same way.
    digests = {sha256_of(Path(values[key])) for key in ("model.base", "model.finetuned", "model.q8_0", "model.q5_0")}
    assert len(digests) == 4


def test_quantized_sizes_are_the_ones_the_readme_quotes(android_run):
    """AndroidDemo/README.md and docs/inference.md quote whisper-base's file sizes; they are these files'."""
    _, values, _ = android_run
    sizes = {name: Path(values[f"model.{key}"]).stat().st_size / 2**20
             for name, key in (("f16", "base"), ("q8_0", "q8_0"), ("q5_0", "q5_0"))}
    assert 0.50 < sizes["q8_0"] / sizes["f16"] < 0.60 and 0.32 < sizes["q5_0"] / sizes["f16"] < 0.42
    readme = (ANDROID / "README.md").read_text(encoding="utf-8")
    inference = (REPO / "docs" / "inference.md").read_text(encoding="utf-8")
    for name, mib in sizes.items():
        assert f"| {name} | {mib:.1f} MiB |" in readme, name
        assert f"| {name} | {mib:.1f} MiB |" in inference, name
    print("\nwhisper-base GGML sizes: " + ", ".join(f"{name} {mib:.1f} MiB" for name, mib in sizes.items()))


def test_wav_variants_match_soundfile_and_soxr(android_run):
    results_dir, _, _ = android_run
    errors = read_results(results_dir / "wav_variants.tsv")
    assert {name for name, *_ in VARIANTS} == {key.rsplit(".", 1)[0] for key in errors}
    assert max(float(v) for k, v in errors.items() if k.endswith("relative_rms_error")) < 0.01


def test_cancel_and_benchmark_report_numbers(android_run):
    results_dir, _, _ = android_run
    cancel = read_results(results_dir / "cancel.tsv")
    assert float(cancel["stop_ms"]) < 10_000
    benchmark = read_results(results_dir / "benchmark.tsv")
    encode, decode, seconds = (float(benchmark[k]) for k in ("encode_ms", "decode_ms", "audio_seconds"))
    assert encode > 0 and decode > 0 and seconds > 0
    assert float(benchmark["real_time_factor"]) == pytest.approx((encode + decode) / 1000 / seconds, rel=1e-2)
    print(f"\nAndroidDemo host benchmark (whisper-base, threads={THREADS}): encoder {encode:.0f} ms, "
          f"decoder {decode:.0f} ms for {seconds:.1f} s of audio, real-time factor {benchmark['real_time_factor']}; "
          f"cancel stopped in {float(cancel['stop_ms']):.0f} ms")
