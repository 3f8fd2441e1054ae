"""GGML export proven by whisper.cpp itself (pywhispercpp): f16 transcribes like transformers, greedy;
q8_0/q5_0 are ggml's block layouts, load in whisper.cpp, and stay close to f16 in size-for-accuracy."""
import json
import re
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
from transcription_audio import REPO, english_clip, english_samples, normalize

from utils.core.metrics import error_rate
from utils.core.models import read_ggml_header
from utils.export.ggml import GGML_TYPES, dequantize_q5_0, dequantize_q8_0, quantize_q5_0, quantize_q8_0, tensor_type
from utils.inference.registry import load_transcriber
from utils.inference.transcriber import TranscribeOptions

slow = pytest.mark.slow
# ggml type id -> (bytes per block, values per block)
TYPE_SIZES = {0: (4, 1), 1: (2, 1), 6: (22, 32), 8: (34, 32)}
QUANTIZERS = {"q8_0": (quantize_q8_0, dequantize_q8_0), "q5_0": (quantize_q5_0, dequantize_q5_0)}
# Worst error per value, in units of the block's scale: half a step, plus the scale's float16 rounding
# (2^-11 relative) times the largest q, with a little slack; q5_0 clips the far end of a block at q - 16 = 15
# where its value needs 16: one step.
ERROR_BOUND = {"q8_0": 0.5 + 128 * 2**-11, "q5_0": 1.0 + 17 * 2**-11}
# A scale below float16's normal range (blocks of tiny weights) is rounded to a fixed step, 2^-24.
SUBNORMAL_SLACK = 128 * 2**-25
# Root-mean-square error over root-mean-square value of a row of normally distributed values.
RELATIVE_RMS_BOUND = {"q8_0": 0.01, "q5_0": 0.06}
ENGLISH_CLIPS = 9   # dataset/audio/en_test_0001..0009.flac


def export(model_dir, output_path, *flags):
    result = subprocess.run([sys.executable, str(REPO / "convert-ggml.py"), f"--model_dir={model_dir}",
                             f"--output_path={output_path}", *flags], cwd=REPO, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr
    assert f"wrote {output_path}" in result.stdout
    return output_path, result.stdout


def read_tensors(path) -> dict:
    """name -> (ggml type id, dims innermost first, data offset) of every tensor in a GGML file."""
    with open(path, "rb") as file:
        data = file.read()
    n_mels, n_bins = struct.unpack_from("<2i", data, 48)
    offset = 56 + 4 * n_mels * n_bins
    (n_tokens,) = struct.unpack_from("<i", data, offset)
    offset += 4
    for _ in range(n_tokens):
        offset += 4 + struct.unpack_from("<i", data, offset)[0]
    tensors = {}
    while offset < len(data):
        n_dims, name_length, kind = struct.unpack_from("<3i", data, offset)
        dims = struct.unpack_from(f"<{n_dims}i", data, offset + 12)
        offset += 12 + 4 * n_dims
        name = data[offset:offset + name_length].decode()
        offset += name_length
        tensors[name] = (kind, dims, offset)
        block_bytes, block_values = TYPE_SIZES[kind]
        offset += int(np.prod(dims)) // block_values * block_bytes
    assert offset == len(data)
    return tensors


def whisper_cpp_file_type(path) -> int:
    """Load `path` in whisper.cpp, in a child process (pywhispercpp crashes on a file whisper.cpp refused),
    and return the file type it read."""
    code = ("import sys, _pywhispercpp as pw\nfrom pywhispercpp.model import Model\n"
            "model = Model(sys.argv[1], redirect_whispercpp_logs_to=sys.stdout)\n"
            "print('file type', pw.whisper_model_ftype(model._ctx))")
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "failed to load" not in result.stdout, result.stdout[-3000:]
    return int(re.search(r"^file type (\d+)$", result.stdout, re.M).group(1))


def transcripts(ggml_path, count=ENGLISH_CLIPS) -> list[str]:
    transcriber = load_transcriber("ggml", str(ggml_path), cpu_threads=2)
    options = TranscribeOptions(language="en")
    return [" ".join(s.text for s in transcriber.transcribe(english_clip(i)[0], options)[0]) for i in range(count)]


def same_text_in_both_engines(model_dir, ggml_path, clip_index):
    path, _ = english_clip(clip_index)
    options = TranscribeOptions(language="en")
    hf = load_transcriber("transformers", str(model_dir))
    cpp = load_transcriber("ggml", str(ggml_path), cpu_threads=2)
    hf_text = " ".join(s.text for s in hf.transcribe(path, options)[0])
    cpp_segments, info = cpp.transcribe(path, options)
    cpp_text = " ".join(s.text for s in cpp_segments)
    assert hf_text.strip()
    assert normalize(cpp_text) == normalize(hf_text)


@pytest.mark.parametrize("kind", ["q8_0", "q5_0"])
def test_blocks_round_trip_within_the_scale(kind):
    quantize, dequantize = QUANTIZERS[kind]
    rng = np.random.default_rng(0)
    # Rows of very different magnitudes, a row of zeros and a row with one outlier.
    values = rng.standard_normal((64, 256)).astype(np.float32) * np.logspace(-2, 1, 64, dtype=np.float32)[:, None]
    values[5] = 0
    values[9, 40] = 50
    blocks = quantize(values)
    assert blocks.dtype.itemsize == {"q8_0": 34, "q5_0": 22}[kind] and len(blocks) == values.size // 32
    restored = dequantize(blocks)
    scale = np.abs(blocks["d"].astype(np.float32))
    error = np.abs(restored - values.reshape(-1)).reshape(-1, 32).max(axis=1)
    assert np.all(error <= ERROR_BOUND[kind] * scale + SUBNORMAL_SLACK)
    restored = restored.reshape(values.shape)
    assert np.all(restored[5] == 0)
    rows = [row for row in range(len(values)) if row not in (5, 9)]
    relative = np.sqrt(np.mean((restored[rows] - values[rows]) ** 2, axis=1) / np.mean(values[rows] ** 2, axis=1))
    assert relative.max() < RELATIVE_RMS_BOUND[kind]


def test_blocks_have_ggml_layout():
    """Known answers worked out by hand from ggml's block definitions."""
    # q8_0: the scale is max|x| / 127 = 1, so q is x rounded, halves away from zero like C's roundf.
    values = np.zeros(32, np.float32)
    values[:7] = [127, -127, 0.5, -0.5, 2.5, -2.5, 1.49]
    expected = struct.pack("<e", 1.0) + struct.pack("<7b", 127, -127, 1, -1, 3, -3, 1) + bytes(25)
    assert quantize_q8_0(values).tobytes() == expected
    # q5_0: x = j - 16; the largest magnitude (-16, j = 0) gets q = 0, so d = 1 and q = j: the fifth bit is
    # set for j >= 16, and byte j holds q_j in its low nibble and q_(16+j) in its high one.
    values = np.arange(32, dtype=np.float32) - 16
    nibbles = bytes(j | (j << 4) for j in range(16))
    for sign in (1, -1):
        blocks = quantize_q5_0(sign * values)
        assert blocks.tobytes() == struct.pack("<eI", float(sign), 0xFFFF0000) + nibbles
        assert np.array_equal(dequantize_q5_0(blocks), sign * values)


def test_tensor_types_follow_whisper_cpp():
    assert tensor_type("decoder.blocks.0.attn.query.weight", 2, "q5_0") == "q5_0"
    assert tensor_type("decoder.token_embedding.weight", 2, "q8_0") == "q8_0"
    assert tensor_type("encoder.conv1.weight", 3, "q8_0") == "f16"
    assert tensor_type("encoder.conv1.weight", 3, "f32") == "f32"
    assert tensor_type("encoder.conv1.bias", 2, "q8_0") == "f32"
    assert tensor_type("encoder.positional_embedding", 2, "q5_0") == "f32"
    assert tensor_type("decoder.blocks.0.attn.query.bias", 1, "q8_0") == "f32"
    assert tensor_type("decoder.blocks.0.mlp_ln.weight", 1, "f16") == "f32"


@pytest.mark.parametrize("flags, message", [
    (["--use_f16=False", "--quantization=q8_0"], "--use_f16=False asks for f32 weights but --quantization=q8_0"),
    (["--use_f16", "--quantization=f32"], "--use_f16=True asks for f16 weights but --quantization=f32"),
    (["--use_f16=False", "--quantization=f16"], "--use_f16=False asks for f32 weights but --quantization=f16"),
    (["--cpu_threads=2"], "--cpu_threads sets whisper.cpp's threads for --test_data; give --test_data too"),
])
def test_contradicting_flags_are_refused(flags, message):
    result = subprocess.run([sys.executable, str(REPO / "convert-ggml.py"), *flags], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: convert-ggml.py: {message}")
    assert len(result.stderr.strip().splitlines()) == 1


@slow
def test_model_whisper_cpp_cannot_load_is_refused(tmp_path, tiny_whisper_dir):
    """whisper.cpp makes every MLP 4 x d_model wide; the shared tiny model's are narrower."""
    result = subprocess.run([sys.executable, str(REPO / "convert-ggml.py"), f"--model_dir={tiny_whisper_dir}",
                             f"--output_path={tmp_path / 'tiny.bin'}"], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().endswith("the encoder's MLPs are 128 wide, but whisper.cpp assumes "
                                          "4 x d_model = 256; it could not load this model")
    assert not (tmp_path / "tiny.bin").exists()


@pytest.fixture(scope="module")
def cpp_tiny_dir(tmp_path_factory, tiny_whisper_dir):
    """The shared tiny random Whisper, but with MLPs 4 x d_model wide: whisper.cpp assumes that width."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig.from_pretrained(tiny_whisper_dir)
    config.encoder_ffn_dim = config.decoder_ffn_dim = 4 * config.d_model
    torch.manual_seed(0)
    output = tmp_path_factory.mktemp("tiny-cpp")
    WhisperForConditionalGeneration(config).save_pretrained(output)
    for item in tiny_whisper_dir.iterdir():
        if item.name not in ("config.json", "model.safetensors"):
            shutil.copy(item, output / item.name)
    return output


@slow
def test_tiny_export_layout(tmp_path, cpp_tiny_dir):
    out, _ = export(cpp_tiny_dir, tmp_path / "tiny.bin")
    header = read_ggml_header(str(out))
    assert header == {"n_vocab": 51865, "n_audio_ctx": 1500, "n_audio_state": 64, "n_audio_head": 2,
                      "n_audio_layer": 2, "n_text_ctx": 448, "n_text_state": 64, "n_text_head": 2,
                      "n_text_layer": 2, "n_mels": 80, "ftype": 1}
    with open(out, "rb") as file:
        file.seek(48)
        assert struct.unpack("<2i", file.read(8)) == (80, 201)
    # whisper.cpp itself accepts every tensor name, shape and type.
    assert whisper_cpp_file_type(out) == 1
    assert load_transcriber("ggml", str(out), cpu_threads=1).multilingual
    with pytest.raises(ValueError, match="not a whisper.cpp GGML model file"):
        load_transcriber("ggml", str(cpp_tiny_dir / "config.json"))


@slow
@pytest.mark.parametrize("quantization, flag, ftype", [("q8_0", "--quantization=q8_0", 2007),
                                                         ("q5_0", "--quantization=q5_0", 2008),
                                                         ("f32", "--use_f16=False", 0)])
def test_tiny_quantized_layout(tmp_path, cpp_tiny_dir, quantization, flag, ftype):
    from transformers import WhisperForConditionalGeneration

    out, stdout = export(cpp_tiny_dir, tmp_path / f"tiny-{quantization}.bin", flag)
    assert f", {quantization}, " in stdout
    assert read_ggml_header(str(out))["ftype"] == ftype   # whisper.cpp's quantize tool's numbering
    tensors = read_tensors(out)
    kinds = {name: kind for name, (kind, _, _) in tensors.items()}
    conv = GGML_TYPES["f32" if quantization == "f32" else "f16"]
    assert kinds["encoder.conv1.weight"] == kinds["encoder.conv2.weight"] == conv
    for name in ("encoder.conv1.bias", "encoder.positional_embedding", "decoder.positional_embedding",
                 "decoder.blocks.1.attn.query.bias", "encoder.ln_post.weight"):
        assert kinds[name] == GGML_TYPES["f32"]
    matrices = [name for name, (_, dims, _) in tensors.items() if len(dims) == 2 and name.endswith(".weight")
                and "positional" not in name]
    assert len(matrices) == 2 * 6 + 2 * 10 + 1   # attention and MLP of every layer, the token embedding
    assert {kinds[name] for name in matrices} == {GGML_TYPES[quantization]}
    # whisper.cpp loads it and reads the file type as the quantization (ftype % 1000).
    assert whisper_cpp_file_type(out) == ftype % 1000
    if quantization == "f32":
        return   # loaded, but whisper.cpp's CPU build aborts when it runs f32 convolution kernels
    # The bytes on disk are the model's weights: the token embedding dequantizes back within the bound.
    quantize, dequantize = QUANTIZERS[quantization]
    kind, dims, offset = tensors["decoder.token_embedding.weight"]
    blocks = np.fromfile(out, dtype=quantize(np.zeros(32, np.float32)).dtype, count=dims[0] * dims[1] // 32,
                         offset=offset)
    weights = WhisperForConditionalGeneration.from_pretrained(cpp_tiny_dir).model.decoder.embed_tokens.weight
    error = np.abs(dequantize(blocks) - weights.detach().numpy().reshape(-1)).reshape(-1, 32).max(axis=1)
    assert np.all(error <= ERROR_BOUND[quantization] * np.abs(blocks["d"].astype(np.float32)) + SUBNORMAL_SLACK)


@pytest.fixture(scope="module")
def whisper_base_f16(tmp_path_factory, whisper_base_dir):
    return export(whisper_base_dir, tmp_path_factory.mktemp("ggml") / "base-f16.bin")[0]


@slow
def test_whisper_base_export_transcribes_like_transformers(whisper_base_dir, whisper_base_f16):
    same_text_in_both_engines(whisper_base_dir, whisper_base_f16, 6)


@slow
def test_whisper_base_quantized_is_smaller_and_close_to_f16(tmp_path, whisper_base_dir, whisper_base_f16):
    manifest = tmp_path / "en.jsonl"
    manifest.write_text("".join(json.dumps(sample) + "\n" for sample in english_samples()[:ENGLISH_CLIPS]))
    q8_0, _ = export(whisper_base_dir, tmp_path / "base-q8_0.bin", "--quantization=q8_0")
    q5_0, report = export(whisper_base_dir, tmp_path / "base-q5_0.bin", "--quantization=q5_0",
                          f"--test_data={manifest}", "--cpu_threads=2")
    f16_size = whisper_base_f16.stat().st_size
    assert 0.50 < q8_0.stat().st_size / f16_size < 0.60   # 34 bytes per 32 values against 64
    assert 0.32 < q5_0.stat().st_size / f16_size < 0.42   # 22 bytes per 32 values
    references = [english_clip(i)[1] for i in range(ENGLISH_CLIPS)]
    f16_texts, q8_0_texts = transcripts(whisper_base_f16), transcripts(q8_0)
    f16_wer = error_rate(references, f16_texts, "wer").value
    assert f16_wer < 0.2
    # 8 bits change a few words of the clips whisper-base is unsure of (here 7 of 102, in 2 of 9 clips);
    # on all 20 clips q8_0 scores as well as f16 (docs/inference.md).
    assert error_rate(f16_texts, q8_0_texts, "wer").value <= 0.15
    assert error_rate(references, q8_0_texts, "wer").value <= f16_wer + 0.08
    # 5 bits, scored by convert-ggml.py --test_data on the same clips, greedy: still readable.
    words = error_rate(references, references, "wer").counts.reference_units
    match = re.search(rf"^en: WER ([\d.]+) % \((\d+) errors in {words} words, {ENGLISH_CLIPS} clips\)$", report, re.M)
    assert match, report
    assert float(match.group(1)) / 100 <= f16_wer + 0.12
    assert float(match.group(1)) == pytest.approx(100 * int(match.group(2)) / words, abs=0.05)
    assert re.search(rf"^transcribed {ENGLISH_CLIPS} clips \([\d.]+ s of audio\) in [\d.]+ s with 2 threads$",
                     report, re.M)


@slow
def test_merged_lora_export_transcribes_like_transformers(tmp_path, whisper_base_dir):
    """A fine-tune: LoRA with random adapter weights, merged with peft, saved, exported."""
    from peft import LoraConfig, get_peft_model
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model = WhisperForConditionalGeneration.from_pretrained(whisper_base_dir)
    original = model.model.decoder.layers[0].self_attn.q_proj.weight.detach().clone()
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.01)   # zero by default; random so the merge changes weights
    merged = peft_model.merge_and_unload()
    assert not torch.equal(merged.model.decoder.layers[0].self_attn.q_proj.weight, original)
    merged_dir = tmp_path / "merged"
    merged.save_pretrained(merged_dir)
    processor = WhisperProcessor.from_pretrained(whisper_base_dir)
    processor.save_pretrained(merged_dir)
    processor.feature_extractor.save_pretrained(merged_dir)
    same_text_in_both_engines(merged_dir, export(merged_dir, tmp_path / "merged.bin")[0], 6)
