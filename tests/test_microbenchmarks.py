"""tools/microbenchmarks.py, the measurements behind docs/performance.md's explanations, at tiny sizes."""
import re
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow


def run(*args):
    result = subprocess.run([sys.executable, "tools/microbenchmarks.py", *args, "--threads=1", "--repeats=1"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_attention_and_dropout_print_a_time_per_variant():
    out = run("attention", "--batch=2", "--frames=40", "--tokens=4")
    times = re.findall(r": (sdpa|plain) (\d+\.\d+) ms", out)
    assert [label for label, _ in times] == ["sdpa", "plain"] * 4
    import torch

    from utils.inference.backends.transformers import plain_product_for_decode_steps
    picks = re.findall(r"^(float32|bfloat16) decode steps on this CPU \(AMX: (?:True|False)\) take: (sdpa|plain)$",
                       out, re.M)
    assert picks == [(name, "plain" if plain_product_for_decode_steps(getattr(torch, name)) else "sdpa")
                     for name in ("float32", "bfloat16")]
    assert len(re.findall(r" \d+\.\d ms$", run("dropout", "--batch=1", "--frames=40"), re.M)) == 5


def test_train_step_profiles_and_stores_the_base_projections(tiny_whisper_dir):
    out = run("train-step", f"--model_path={tiny_whisper_dir}", "--batch=2", "--frames=30", "--tokens=5")
    steps = re.findall(r"^lora_dropout=(0\.05|0\.0), (peft|fast_lora|fast_lora, base k/v stored): \d+\.\d+ s per "
                       r"step of 2$", out, re.M)
    assert steps == [(rate, how) for rate in ("0.05", "0.0")
                     for how in ("peft", "fast_lora", "fast_lora, base k/v stored")]
    # Both profiled steps (dropout 0.05: peft's, then fast_lora's) list their six largest events by self
    # time, largest first. Which events those are is timing: at these tiny sizes one preempted call or the
    # autograd engine's own wrapper ("autograd::engine::evaluate_function: MmBackward0") can rank among
    # them, so the names are not asserted, only the shape of the profile.
    profiles = re.findall(r"^lora_dropout=0\.05, (peft|fast_lora): .*\n((?:  .+: \d+ % of the step\n)*)",
                          out, re.M)
    assert [how for how, _ in profiles] == ["peft", "fast_lora"]
    for _, block in profiles:
        shares = [int(share) for share in re.findall(r": (\d+) % of the step$", block, re.M)]
        assert len(shares) == 6 and shares == sorted(shares, reverse=True)
        assert sum(shares) <= 100 + 3      # six shares of one total, each rounded by at most half a percent


def test_encoder_calls_counts_one_pass_per_window_with_the_memo(whisper_base_dir):
    out = run("encoder-calls", f"--model_path={whisper_base_dir}", "--language=en",
              f"--audio_path={REPO / 'dataset' / 'audio' / 'en_test_0001.flac'}")
    counts = {memo: (int(calls), int(passes)) for memo, calls, passes in
              re.findall(r"^(with|without) the memo: (\d+) encoder calls, (\d+) window passes", out, re.M)}
    # transformers' no-speech check runs the encoder a second time; the memo answers it.
    assert counts == {"with": (1, 1), "without": (2, 2)}


def test_decode_attention_times_both_paths_and_marks_the_one_taken(whisper_base_dir):
    import torch

    from utils.core.devices import cpu_supports_bf16
    from utils.inference.backends.transformers import plain_product_for_decode_steps

    out = run("decode-attention", f"--model_path={whisper_base_dir}", "--language=en", "--batch=2",
              f"--audio_path={REPO / 'dataset' / 'audio' / 'en_test_0001.flac'}")
    rows = re.findall(r"^(float32|bfloat16) batch 2, decode steps through (sdpa|plain): (\d+\.\d+) s \(median of 1\)"
                      r"(  <- what this CPU takes)?$", out, re.M)
    dtype = "bfloat16" if cpu_supports_bf16() else "float32"
    taken = "plain" if plain_product_for_decode_steps(getattr(torch, dtype)) else "sdpa"
    assert [(d, path, bool(mark)) for d, path, _, mark in rows] == [(dtype, "sdpa", taken == "sdpa"),
                                                                   (dtype, "plain", taken == "plain")]


def test_best_of_times_both_sample_counts_in_both_places(tmp_path):
    from transcription_audio import english_clip

    path, sentence = english_clip(0)
    reference = tmp_path / "reference.txt"
    reference.write_text(sentence)
    out = run("best-of", "--language=en", f"--audio_path={path}", f"--reference_path={reference}", "--batch=2")
    rows = re.findall(r"^ct2 int8 (sequential fallback|batched loop retry), best_of=(5|1): (\d+\.\d) s, "
                      r"WER (\d+\.\d) % \(median of 1\)$", out, re.M)
    assert [(name, samples) for name, samples, _, _ in rows] == [
        ("sequential fallback", "5"), ("sequential fallback", "1"),
        ("batched loop retry", "5"), ("batched loop retry", "1")]
    assert all(float(rate) <= 35.0 for _, _, _, rate in rows)   # espeak speech, base model


def test_benchmark_by_first_word_or_flag_and_mistakes_are_one_sentence():
    def run_raw(*args):
        return subprocess.run([sys.executable, "tools/microbenchmarks.py", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=120)

    result = run_raw("--benchmark=dropout", "--batch=1", "--frames=8", "--threads=1", "--repeats=1")
    assert result.returncode == 0 and len(re.findall(r" over 1 x 8 x 512: \d+\.\d ms$", result.stdout, re.M)) == 5
    result = run_raw("dropuot")
    assert result.returncode == 2 and "--benchmark: invalid choice: 'dropuot'" in result.stderr
    result = run_raw("dropout", "--repeat=2")
    assert result.returncode == 2 and "unknown flag --repeat; did you mean --repeats?" in result.stderr
    result = run_raw("dropout", "--repeats=0")
    assert result.returncode == 2 and "--repeats must be at least 1, got 0" in result.stderr


def test_heap_counts_the_page_faults_the_finetune_switch_saves():
    # Page faults, not seconds: a 96 MB tensor is 23,438 pages of 4 KB whatever the machine's load.
    out = run("heap")
    faults = dict(re.findall(r"96 MB tensor after the first, (glibc default|keep_large_tensors_in_the_heap): "
                             r"(\d+) minor", out))
    assert set(faults) == {"glibc default", "keep_large_tensors_in_the_heap"}, out
    assert int(faults["glibc default"]) > 16_000 and int(faults["keep_large_tensors_in_the_heap"]) < 2_000, faults
