"""CTranslate2 -> transformers import (utils/export/ct2_import.py, tools/ct2_to_hf.py).

The parser and converter are tested on tiny random Whisper models that the tests write with
CTranslate2's own converter, in every storage type (no download); the acceptance checks on the
real whisper-base and whisper-tiny.en use models/ (made by `make models`) and fail if absent.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from utils.export.ct2_import import Ct2FormatError, build_generation_config, convert_ct2_to_hf, read_model_bin

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "models")
LANGUAGES = ["en", "zh", "de", "es"]
SPECIALS = (["<|endoftext|>", "<|startoftranscript|>"] + [f"<|{c}|>" for c in LANGUAGES]
            + ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>",
               "<|nocaptions|>", "<|notimestamps|>"])
N_TIMESTAMPS = 1501


def _tiny_tokenizer(directory: str):
    """A byte-level BPE Whisper tokenizer with a small vocabulary and no timestamp tokens
    (like tiny.en's tokenizer.json), trained here so that no model download is needed."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import WhisperTokenizer

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = ["the quick brown fox jumps over the lazy dog", "hello world, this is whisper",
            "guten morgen", "ni hao"] * 20
    backend.train_from_iterator(text, trainer)
    backend.add_special_tokens(SPECIALS)
    os.makedirs(directory, exist_ok=True)
    backend.save(os.path.join(directory, "tokenizer.json"))
    return WhisperTokenizer(tokenizer_file=os.path.join(directory, "tokenizer.json"),
                            extra_special_tokens=SPECIALS[1:])


def _tiny_whisper(directory: str, multilingual: bool = True, seed: int = 0):
    """Tiny random WhisperForConditionalGeneration saved with tokenizer + generation config."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    tokenizer = _tiny_tokenizer(directory)
    generation_config = build_generation_config(tokenizer, is_multilingual=multilingual,
                                                alignment_heads=[[1, 0], [1, 1]])
    config = WhisperConfig(
        vocab_size=len(tokenizer) + N_TIMESTAMPS, d_model=64, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128,
        decoder_ffn_dim=128, num_mel_bins=80, max_source_positions=1500, max_target_positions=448,
        pad_token_id=generation_config.pad_token_id, bos_token_id=generation_config.bos_token_id,
        eos_token_id=generation_config.eos_token_id,
        decoder_start_token_id=generation_config.decoder_start_token_id,
        init_std=0.2)   # larger than HF's 0.02, so greedy decoding does not repeat one token
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        # HF initialises biases to 0 and norms to 1; random values test their mapping too (and
        # keep CTranslate2 from storing the identical ones once, under aliases).
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.normal_(0, 0.1)
            elif "layer_norm" in name:
                param.uniform_(0.5, 1.5)
    model.generation_config = generation_config
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(directory)
    return model


def _ct2_convert(hf_dir: str, out_dir: str, quantization: str | None) -> str:
    import ctranslate2

    converter = ctranslate2.converters.TransformersConverter(hf_dir, copy_files=["tokenizer.json"])
    return converter.convert(out_dir, quantization=quantization, force=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny multilingual model in transformers form and in CT2 form for each storage type."""
    root = tmp_path_factory.mktemp("tiny_ct2")
    hf_dir = str(root / "hf")
    model = _tiny_whisper(hf_dir)
    ct2 = {q: _ct2_convert(hf_dir, str(root / f"ct2_{q}"), q)
           for q in ("float32", "float16", "bfloat16", "int8")}
    features = np.random.default_rng(0).normal(size=(1, 80, 3000)).astype(np.float32)
    return dict(root=root, hf_dir=hf_dir, model=model, ct2=ct2, features=features)


def _imported(tiny, quantization: str):
    out = tiny["root"] / f"imported_{quantization}"
    if not out.exists():
        convert_ct2_to_hf(tiny["ct2"][quantization], str(out), is_multilingual=True)
    from transformers import WhisperForConditionalGeneration

    return str(out), WhisperForConditionalGeneration.from_pretrained(str(out)).eval()


# ---------------------------------------------------------------- parser

def test_parser_reads_every_variable_of_a_converter_written_model(tiny):
    import ctranslate2  # noqa: F401  (the converter that wrote the file)

    parsed = read_model_bin(os.path.join(tiny["ct2"]["float32"], "model.bin"))
    assert (parsed.version, parsed.spec) == (6, "WhisperSpec")
    assert parsed.aliases["decoder/projection/weight"] == "decoder/embeddings/weight"
    assert parsed.array("decoder/projection/weight") is parsed.array("decoder/embeddings/weight")
    state = tiny["model"].state_dict()
    emb = parsed.array("decoder/embeddings/weight")
    assert emb.dtype == np.float32 and emb.shape == (tiny["model"].config.vocab_size, 64)
    assert np.array_equal(emb, state["model.decoder.embed_tokens.weight"].numpy())
    # fused Q|K|V of the first encoder layer, in that order
    qkv = parsed.array("encoder/layer_0/self_attention/linear_0/weight")
    expected = torch.cat([state[f"model.encoder.layers.0.self_attn.{p}_proj.weight"]
                          for p in "qkv"]).numpy()
    assert np.array_equal(qkv, expected)
    assert parsed.scalar("encoder/num_heads") == 2


@pytest.mark.parametrize("quantization,stored", [("float16", "float16"), ("bfloat16", "bfloat16"),
                                                 ("int8", "int8")])
def test_parser_decodes_each_storage_type(tiny, quantization, stored):
    parsed = read_model_bin(os.path.join(tiny["ct2"][quantization], "model.bin"))
    weight = parsed.variables["decoder/layer_1/ffn/linear_0/weight"]
    assert weight.dtype == stored
    original = tiny["model"].state_dict()["model.decoder.layers.1.fc1.weight"].numpy()
    from utils.export.ct2_import import dequantized

    values = dequantized(parsed, "decoder/layer_1/ffn/linear_0/weight")
    # relative error of each storage type: fp16 ~5e-4, bf16 ~4e-3, int8 (per-row absmax/127) ~1/254
    tolerance = {"float16": 1e-3, "bfloat16": 8e-3, "int8": 1 / 200}[quantization]
    row_max = np.abs(original).max(axis=1, keepdims=True)
    assert np.all(np.abs(values - original) <= tolerance * row_max)
    assert not np.array_equal(values, original)   # it really was stored lossy


def _truncated_copy(src_dir, dst_dir, size):
    shutil.copytree(src_dir, dst_dir)
    path = os.path.join(dst_dir, "model.bin")
    with open(path, "r+b") as handle:
        handle.truncate(size)
    return path


def test_truncated_model_bin_names_file_and_offset(tiny, tmp_path):
    full = os.path.getsize(os.path.join(tiny["ct2"]["float16"], "model.bin"))
    path = _truncated_copy(tiny["ct2"]["float16"], tmp_path / "cut", full // 2)
    with pytest.raises(Ct2FormatError) as info:
        read_model_bin(path)
    message = str(info.value)
    assert message.startswith(f"{path}: truncated at byte offset ")
    offset = int(message.split("byte offset ")[1].split()[0])
    assert 0 < offset <= full // 2
    assert "incomplete or corrupted" in message


def test_corrupted_model_bin_names_variable_and_offset(tiny, tmp_path):
    shutil.copytree(tiny["ct2"]["float32"], tmp_path / "bad")
    path = str(tmp_path / "bad" / "model.bin")
    parsed = read_model_bin(path)
    variable = parsed.variables["encoder/conv1/weight"]
    # the dtype byte sits 5 bytes (uint8 dtype + uint32 byte count) before the data
    dtype_offset = variable.offset - 5
    with open(path, "r+b") as handle:
        handle.seek(dtype_offset)
        handle.write(bytes([9]))
    with pytest.raises(Ct2FormatError, match=rf"'encoder/conv1/weight'.*unknown dtype code 9 at "
                                             rf"byte offset {dtype_offset}"):
        read_model_bin(path)
    with open(path, "wb") as handle:
        handle.write(b"\x01\x02\x03\x04garbage")
    with pytest.raises(Ct2FormatError, match="format version 67305985 at byte offset 0"):
        read_model_bin(path)


def test_cli_reports_truncated_model_in_one_line_and_writes_nothing(tiny, tmp_path):
    full = os.path.getsize(os.path.join(tiny["ct2"]["int8"], "model.bin"))
    _truncated_copy(tiny["ct2"]["int8"], tmp_path / "cut", full - 100)
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "ct2_to_hf.py"),
                             f"--model_dir={tmp_path / 'cut'}", f"--output_dir={out}"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "model.bin: truncated at byte offset" in lines[0]
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


# ---------------------------------------------------------------- converter

def test_import_restores_the_exact_weights_and_configs(tiny):
    out, imported = _imported(tiny, "float32")
    original = tiny["model"].state_dict()
    got = imported.state_dict()
    assert set(got) == set(original)
    for name, tensor in original.items():
        if name.endswith("k_proj.bias"):
            continue
        assert torch.equal(got[name], tensor), name
    assert imported.proj_out.weight.data_ptr() == imported.model.decoder.embed_tokens.weight.data_ptr()
    for key in ("d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
                "decoder_ffn_dim", "vocab_size", "num_mel_bins", "decoder_start_token_id"):
        assert getattr(imported.config, key) == getattr(tiny["model"].config, key), key
    generation = json.load(open(os.path.join(out, "generation_config.json")))
    assert generation["alignment_heads"] == [[1, 0], [1, 1]]
    assert generation["lang_to_id"] == tiny["model"].generation_config.lang_to_id
    assert set(generation["lang_to_id"]) == {f"<|{c}|>" for c in LANGUAGES}
    assert generation["suppress_tokens"] == tiny["model"].generation_config.suppress_tokens
    assert os.path.isfile(os.path.join(out, "preprocessor_config.json"))


def test_imported_tokenizer_gains_the_timestamp_tokens(tiny):
    from transformers import WhisperProcessor

    out, _ = _imported(tiny, "float32")
    processor = WhisperProcessor.from_pretrained(out)
    tokenizer = processor.tokenizer
    base = len(_tiny_tokenizer(str(tiny["root"] / "tok_only")))
    assert len(tokenizer) == base + N_TIMESTAMPS
    assert tokenizer.convert_tokens_to_ids("<|0.00|>") == base
    assert tokenizer.convert_tokens_to_ids("<|30.00|>") == base + N_TIMESTAMPS - 1
    notimestamps = tokenizer.convert_tokens_to_ids("<|notimestamps|>")
    ids = tokenizer("hello world").input_ids
    assert tokenizer.decode([base + 50] + ids + [base + 75], decode_with_timestamps=True,
                            skip_special_tokens=True) == "<|1.00|>hello world<|1.50|>"
    assert notimestamps == base - 1
    assert processor.feature_extractor.feature_size == 80


def _greedy_choices(model, features, tokens):
    """The token greedy decoding picks after each prefix of `tokens` (one teacher-forced pass),
    with the generation config's suppressions applied as generate and CTranslate2 apply them."""
    config = model.generation_config
    with torch.no_grad():
        logits = model(input_features=features, decoder_input_ids=torch.tensor([tokens])).logits[0]
    logits[:, config.suppress_tokens] = -float("inf")
    return logits, logits.argmax(-1).tolist()


def test_imported_model_decodes_like_the_original_and_ctranslate2(tiny):
    import ctranslate2

    _, imported = _imported(tiny, "float32")
    config = imported.generation_config
    prompt = [config.decoder_start_token_id, config.lang_to_id["<|de|>"],
              config.task_to_id["transcribe"], config.no_timestamps_token_id]
    ct = ctranslate2.models.Whisper(tiny["ct2"]["float32"], device="cpu")
    storage = ctranslate2.StorageView.from_array(tiny["features"])
    ct_ids = ct.generate(storage, [prompt], beam_size=1, max_length=len(prompt) + 12,
                         suppress_blank=False)[0].sequences_ids[0]
    assert len(ct_ids) >= 8 and len(set(ct_ids)) > 3   # a real sequence, not one token repeated
    features = torch.from_numpy(tiny["features"])
    tokens = prompt + ct_ids
    imported_logits, choices = _greedy_choices(imported, features, tokens)
    original_logits, _ = _greedy_choices(tiny["model"], features, tokens)
    assert torch.equal(imported_logits, original_logits)
    assert choices[len(prompt) - 1:-1] == ct_ids


@pytest.mark.parametrize("quantization", ["float16", "int8"])
def test_lossy_storage_imports_close_to_the_original(tiny, quantization):
    _, imported = _imported(tiny, quantization)
    features = torch.from_numpy(tiny["features"])
    with torch.no_grad():
        want = tiny["model"].model.encoder(features).last_hidden_state
        got = imported.model.encoder(features).last_hidden_state
    error = (got - want).abs().max().item() / want.abs().max().item()
    assert error < {"float16": 1e-2, "int8": 1e-1}[quantization]
    assert error > 0


def test_round_trip_through_ctranslate2_converter_gives_identical_weights(tiny, tmp_path):
    out, _ = _imported(tiny, "float16")
    again = _ct2_convert(out, str(tmp_path / "again"), "float16")
    published = read_model_bin(os.path.join(tiny["ct2"]["float16"], "model.bin"))
    rebuilt = read_model_bin(os.path.join(again, "model.bin"))
    assert set(rebuilt.variables) == set(published.variables)
    for name, variable in published.variables.items():
        assert rebuilt.variables[name].dtype == variable.dtype, name
        assert np.array_equal(rebuilt.variables[name].array, variable.array), name
    assert json.load(open(os.path.join(again, "config.json"))) == \
        json.load(open(os.path.join(tiny["ct2"]["float16"], "config.json")))


def test_english_only_model_generates_without_language_or_task(tmp_path):
    from transformers import WhisperForConditionalGeneration

    hf_dir = str(tmp_path / "hf")
    original = _tiny_whisper(hf_dir, multilingual=False, seed=1)
    ct2_dir = _ct2_convert(hf_dir, str(tmp_path / "ct2"), "float16")
    out = str(tmp_path / "imported")
    summary = convert_ct2_to_hf(ct2_dir, out, is_multilingual=False)
    assert summary.is_multilingual is False and summary.added_tokens == N_TIMESTAMPS
    generation = json.load(open(os.path.join(out, "generation_config.json")))
    assert generation["is_multilingual"] is False
    assert "lang_to_id" not in generation and "task_to_id" not in generation
    model = WhisperForConditionalGeneration.from_pretrained(out).eval()
    assert generation["decoder_start_token_id"] == original.generation_config.decoder_start_token_id
    features = torch.from_numpy(np.random.default_rng(1).normal(size=(1, 80, 3000)).astype(np.float32))
    with pytest.raises(ValueError, match="English-only"):
        model.generate(features, language="de")
    # generate() itself without language/task is checked on the real tiny.en (below), where it ends.


def test_output_dir_is_not_overwritten_without_permission(tiny, tmp_path):
    out = tmp_path / "existing"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(Ct2FormatError, match="--overwrite"):
        convert_ct2_to_hf(tiny["ct2"]["int8"], str(out))
    assert (out / "keep.txt").read_text() == "user data"
    convert_ct2_to_hf(tiny["ct2"]["int8"], str(out), overwrite=True, is_multilingual=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()


# ---------------------------------------------------------------- real models (make models)

CLIPS = {"fox": ("en", "The quick brown fox jumps over the lazy dog."),
         "stella": ("en", "Please call Stella and ask her to bring these things from the store."),
         "morgen": ("de", "Guten Morgen, wie geht es dir heute?")}


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """Three short spoken clips (espeak-ng), as 16 kHz float32 arrays."""
    from utils.core.audio import load_audio

    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is missing: run `make system-deps`")
    root = tmp_path_factory.mktemp("speech")
    clips = {}
    for name, (voice, text) in CLIPS.items():
        path = root / f"{name}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True)
        clips[name] = load_audio(path)
    return clips


def _ct2_dir(hf_dir) -> str:
    path = f"{hf_dir}-ct2"
    if not os.path.isfile(os.path.join(path, "model.bin")):
        pytest.fail(f"{path} is missing: run `make models`")
    return path


# Each real model decodes two clips: enough to catch a wrong weight, cheap on a 2-core machine.
BASE_CLIPS = ("stella", "morgen")
TINY_EN_CLIPS = ("fox", "stella")


def _same_features_decoding(hf_dir, speech, multilingual: bool):
    """(clip, language, CTranslate2 tokens, transformers tokens) on identical log-mel features."""
    import ctranslate2
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    processor = WhisperProcessor.from_pretrained(hf_dir)
    model = WhisperForConditionalGeneration.from_pretrained(hf_dir).eval()
    ct = ctranslate2.models.Whisper(_ct2_dir(hf_dir), device="cpu", compute_type="float32")
    config = model.generation_config
    results = []
    for name, audio in speech.items():
        features = processor.feature_extractor(audio, sampling_rate=16000, return_tensors="np").input_features
        storage = ctranslate2.StorageView.from_array(np.ascontiguousarray(features))
        with torch.no_grad():
            if multilingual:
                language = ct.detect_language(storage)[0][0][0]
                hf_language = model.detect_language(torch.from_numpy(features))[0].item()
                assert hf_language == config.lang_to_id[language], name
                prompt = [config.decoder_start_token_id, config.lang_to_id[language],
                          config.task_to_id["transcribe"], config.no_timestamps_token_id]
                out = model.generate(torch.from_numpy(features), language=language, task="transcribe")
            else:
                language = None
                prompt = [config.decoder_start_token_id, config.no_timestamps_token_id]
                out = model.generate(torch.from_numpy(features))   # no language/task: English-only
        ct_ids = ct.generate(storage, [prompt], beam_size=1)[0].sequences_ids[0]
        hf_ids = [t for t in out[0].tolist() if t not in prompt and t != config.eos_token_id]
        results.append((name, language, ct_ids, hf_ids, processor.tokenizer.decode(hf_ids)))
    return results


@pytest.mark.slow
def test_whisper_base_decodes_like_ctranslate2_on_the_same_features(whisper_base_dir, speech):
    results = _same_features_decoding(whisper_base_dir, {c: speech[c] for c in BASE_CLIPS},
                                      multilingual=True)
    for name, language, ct_ids, hf_ids, text in results:
        assert hf_ids == ct_ids, f"{name}: {text!r}"
    texts = {name: (language, text) for name, language, _, _, text in results}
    assert texts["stella"][0] == "<|en|>" and "Stella" in texts["stella"][1]
    assert texts["morgen"][0] == "<|de|>" and "Morgen" in texts["morgen"][1]


def test_whisper_tiny_en_decodes_like_ctranslate2_without_language_or_task(whisper_tiny_en_dir, speech):
    results = _same_features_decoding(whisper_tiny_en_dir, {c: speech[c] for c in TINY_EN_CLIPS},
                                      multilingual=False)
    for name, _, ct_ids, hf_ids, text in results:
        assert hf_ids == ct_ids, f"{name}: {text!r}"
    assert "brown fox" in dict((r[0], r[4]) for r in results)["fox"]


@pytest.mark.parametrize("name", ["whisper-base", "whisper-tiny.en"])
def test_fetched_tokenizers_normalize_english_spelling(name):
    from conftest import require_model
    from transformers import WhisperProcessor

    tokenizer = WhisperProcessor.from_pretrained(require_model(__import__("pathlib").Path(MODELS) / name)).tokenizer
    assert tokenizer.normalize("Hello, Mr. Smith, what colour is it?") == "hello mister smith what color is it"


# Flags that ctranslate2 4.x writes and the older converter behind tiny.en's package did not.
NEWER_CONVERTER_FLAGS = {"decoder/alibi_use_positive_positions", "decoder/scale_alibi"}


@pytest.mark.parametrize("name", ["whisper-base", "whisper-tiny.en"])
@pytest.mark.slow
def test_real_model_round_trip_is_identical_and_faster_whisper_agrees(name, speech, tmp_path):
    from conftest import require_model
    from faster_whisper import WhisperModel

    hf_dir = str(require_model(__import__("pathlib").Path(MODELS) / name))
    published_dir = _ct2_dir(hf_dir)
    again = _ct2_convert(hf_dir, str(tmp_path / "again"), "float16")
    published = read_model_bin(os.path.join(published_dir, "model.bin"))
    rebuilt = read_model_bin(os.path.join(again, "model.bin"))
    assert set(rebuilt.variables) - set(published.variables) <= NEWER_CONVERTER_FLAGS
    for var, variable in published.variables.items():
        assert rebuilt.variables[var].dtype == variable.dtype, var
        assert np.array_equal(rebuilt.variables[var].array, variable.array), var
    shutil.copy(os.path.join(hf_dir, "preprocessor_config.json"), again)
    texts = {}
    for label, path in (("published", published_dir), ("round trip", again)):
        model = WhisperModel(path, device="cpu", compute_type="float32", cpu_threads=2)
        for clip in BASE_CLIPS if name == "whisper-base" else TINY_EN_CLIPS:
            # temperature 0 alone: the default fallback to sampling would make texts random
            segments, info = model.transcribe(speech[clip], beam_size=1, temperature=0.0,
                                              without_timestamps=True)
            texts.setdefault(clip, {})[label] = (info.language, "".join(s.text for s in segments))
    for clip, pair in texts.items():
        assert pair["published"] == pair["round trip"], clip
    assert "things from the store" in texts["stella"]["published"][1]
    if name == "whisper-base":
        assert texts["morgen"]["published"][0] == "de"
