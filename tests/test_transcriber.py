"""The one transcription interface: options, languages, audio errors, lazy typed segments."""
import types

import numpy as np
import pytest
from transcription_audio import english_clip, wer

from utils.core.audio import SAMPLE_RATE, AudioError, split_at_quiet_points
from utils.core.languages import to_language_code
from utils.inference.registry import load_transcriber
from utils.inference.transcriber import Segment, TranscribeOptions


def test_language_names_aliases_and_codes():
    assert to_language_code("Chinese") == "zh"
    assert to_language_code("mandarin") == "zh"
    assert to_language_code("<|en|>") == "en"
    assert to_language_code("yue") == "yue"
    assert to_language_code(None) is None and to_language_code("auto") is None


def test_unknown_language_lists_the_valid_ones():
    with pytest.raises(ValueError) as error:
        to_language_code("klingon")
    message = str(error.value)
    assert "unknown language 'klingon'" in message
    assert "zh (chinese)" in message and "en (english)" in message


def test_split_at_quiet_points_cuts_in_pauses():
    rng = np.random.default_rng(0)
    audio = rng.uniform(-0.5, 0.5, 100 * SAMPLE_RATE).astype(np.float32)
    pauses = [(24.0, 24.6), (51.0, 51.5), (77.2, 77.8)]
    for start, end in pauses:
        audio[int(start * SAMPLE_RATE):int(end * SAMPLE_RATE)] = 0.0
    pieces = split_at_quiet_points(audio, 30.0)
    assert pieces[0][0] == 0 and pieces[-1][1] == len(audio)
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))
    assert all(0 < end - start <= 30 * SAMPLE_RATE for start, end in pieces)
    cuts = [end / SAMPLE_RATE for _, end in pieces[:-1]]
    assert len(cuts) == 3
    for cut, (start, end) in zip(cuts, pauses):
        assert start <= cut <= end


def test_unknown_backend_and_bad_audio(tiny_whisper_dir):
    with pytest.raises(ValueError, match="valid backends: auto, transformers, ct2, ggml"):
        load_transcriber("onnx", str(tiny_whisper_dir))
    transcriber = load_transcriber("transformers", str(tiny_whisper_dir))
    with pytest.raises(AudioError, match="not a readable audio file"):
        transcriber.transcribe(b"this is not audio")
    with pytest.raises(AudioError, match="no samples"):
        transcriber.transcribe(np.zeros(0, dtype=np.float32))
    with pytest.raises(ValueError, match="valid tasks"):
        transcriber.transcribe(np.zeros(SAMPLE_RATE, np.float32), TranscribeOptions(task="summarize"))
    with pytest.raises(ValueError, match="does not support word_timestamps"):
        transcriber.transcribe(np.zeros(SAMPLE_RATE, np.float32), TranscribeOptions(word_timestamps=True))


def test_tiny_model_batches_windows_and_streams_segments(tiny_whisper_dir, caplog):
    """A random model says nonsense, but two 30 s windows decoded as one batch must come back as
    well-formed segments, one per window, in order, without a transformers warning per window."""
    rng = np.random.default_rng(1)
    audio = (0.1 * rng.standard_normal(40 * SAMPLE_RATE)).astype(np.float32)
    audio[28 * SAMPLE_RATE:29 * SAMPLE_RATE] = 0.0   # the quiet point where the windows meet
    transcriber = load_transcriber("transformers", str(tiny_whisper_dir), batch_size=2)
    # Random weights never say end-of-text; stop early so the test stays fast.
    transcriber.model.generation_config.max_length = 16
    segments, info = transcriber.transcribe(audio, TranscribeOptions(language="de", timestamps=False))
    assert isinstance(segments, types.GeneratorType)
    assert info.language == "de" and info.language_probability is None
    assert info.duration == pytest.approx(40.0)
    segments = list(segments)
    assert all(isinstance(s, Segment) for s in segments)
    assert [s.start for s in segments] == [0.0, pytest.approx(28.5, abs=0.5)][:len(segments)]
    assert all(a.end == b.start for a, b in zip(segments, segments[1:]))
    assert segments[-1].end == pytest.approx(40.0)
    assert not [r for r in caplog.records if "max_new_tokens" in r.getMessage()]


def test_whisper_base_detects_english_and_transcribes(whisper_base_dir):
    path, sentence = english_clip(0)
    transcriber = load_transcriber("transformers", str(whisper_base_dir))
    segments, info = transcriber.transcribe(path)
    segments = list(segments)
    assert info.language == "en" and info.language_probability > 0.5
    assert wer(sentence, " ".join(s.text for s in segments)) <= 0.35   # espeak speech, "20" vs "twenty"
    assert 0 <= segments[0].start < segments[-1].end <= info.duration


def test_english_only_model_rejects_other_languages_and_translation(whisper_tiny_en_dir):
    path, sentence = english_clip(1)
    transcriber = load_transcriber("transformers", str(whisper_tiny_en_dir))
    assert transcriber.multilingual is False
    with pytest.raises(ValueError, match="English-only"):
        transcriber.transcribe(path, TranscribeOptions(language="zh"))
    with pytest.raises(ValueError, match="English-only"):
        transcriber.transcribe(path, TranscribeOptions(task="translate"))
    segments, info = transcriber.transcribe(path, TranscribeOptions(language="english"))
    assert info.language == "en"
    assert wer(sentence, " ".join(s.text for s in segments)) <= 0.35


def test_int8_transformers_quantizes_every_linear_layer_and_still_transcribes(whisper_tiny_en_dir):
    import torch

    path, sentence = english_clip(2)
    transcriber = load_transcriber("transformers", str(whisper_tiny_en_dir), use_int8=True)
    modules = list(transcriber.model.modules())
    assert sum(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in modules) >= 20
    assert not any(type(m) is torch.nn.Linear for m in modules)
    segments, _ = transcriber.transcribe(path, TranscribeOptions(language="en"))
    assert wer(sentence, " ".join(s.text for s in segments)) <= 0.35
    with pytest.raises(ValueError, match="dynamic int8 quantization for the CPU"):
        load_transcriber("transformers", str(whisper_tiny_en_dir), use_int8=True, use_gpu=True)


def test_encoder_runs_once_per_window_however_often_generate_asks(whisper_base_dir):
    # With timestamps, transformers' no-speech check runs the whole model again on the window's features,
    # and each temperature fallback a third time; the memo answers those from the first pass.
    path, sentence = english_clip(0)
    transcriber = load_transcriber("transformers", str(whisper_base_dir))
    memo = transcriber.model.get_encoder().forward
    calls = []
    compute = memo.compute
    memo.compute = lambda *a, **k: calls.append(a[0].shape) or compute(*a, **k)
    options = TranscribeOptions(language="en")
    remembered = [(s.start, s.end, s.text) for s in transcriber.transcribe(path, options)[0]]
    assert calls == [(1, 80, 3000)]
    assert wer(sentence, " ".join(text for _, _, text in remembered)) <= 0.35
    # The same decoding with the encoder run every time it is asked: identical segments.
    transcriber.model.get_encoder().forward = compute
    assert [(s.start, s.end, s.text) for s in transcriber.transcribe(path, options)[0]] == remembered


@pytest.mark.parametrize("mask", ["none", "bool", "float"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("amx", [True, False])
def test_cpu_decode_step_attention_equals_sdpa(mask, dtype, amx, monkeypatch):
    import torch
    import torch.nn.functional as F

    import utils.inference.backends.transformers as backend

    # The rule: bfloat16 decode steps take the plain product on a CPU without AMX, sdpa elsewhere.
    backend.plain_product_for_decode_steps.cache_clear()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    plain = backend.plain_product_for_decode_steps(getattr(torch, dtype))
    backend.plain_product_for_decode_steps.cache_clear()
    assert plain == (dtype == "bfloat16" and not amx)
    monkeypatch.setattr(backend, "plain_product_for_decode_steps", lambda _: plain)
    generator = torch.Generator().manual_seed(0)
    dtype = getattr(torch, dtype)
    query, key, value = (torch.randn(shape, generator=generator).to(dtype) for shape in
                         [(3, 8, 1, 64), (3, 8, 40, 64), (3, 8, 40, 64)])
    keep = torch.ones(3, 1, 1, 40, dtype=torch.bool)
    keep[1, ..., 25:] = False   # the second row's last 15 keys are padding
    masks = {"none": None, "bool": keep,
             "float": torch.zeros(3, 1, 1, 40, dtype=dtype).masked_fill(~keep, torch.finfo(dtype).min)}
    module = torch.nn.Module().eval()
    out, weights = backend._sdpa_cpu_decode(module, query, key, value, masks[mask], scaling=0.125)
    reference_mask = masks[mask].float() if mask == "float" else masks[mask]
    expected = F.scaled_dot_product_attention(query.float(), key.float(), value.float(), attn_mask=reference_mask,
                                              scale=0.125)
    assert out.shape == (3, 1, 8, 64) and out.dtype == dtype
    assert torch.allclose(out.float(), expected.transpose(1, 2), atol=1e-5 if dtype == torch.float32 else 3e-2)
    assert (weights is not None) == plain
    if plain:
        # The plain product, whose attention weights come back as eager attention's do.
        assert torch.allclose(weights.float().sum(-1), torch.ones(3, 8, 1), atol=1e-2)
        assert (weights[1, ..., 25:] == 0).all() == (mask != "none")


def test_transformers_on_cpu_uses_the_decode_step_attention_and_bf16_where_supported(whisper_tiny_en_dir,
                                                                                     monkeypatch):
    import torch

    import utils.core.devices
    from utils.inference.backends.transformers import CPU_ATTENTION

    path, sentence = english_clip(2)
    plain = load_transcriber("transformers", str(whisper_tiny_en_dir))
    assert plain.model.config._attn_implementation == CPU_ATTENTION
    eager = load_transcriber("transformers", str(whisper_tiny_en_dir), attn_implementation="eager")
    texts = [" ".join(s.text for s in t.transcribe(path, TranscribeOptions(language="en"))[0]) for t in (plain, eager)]
    assert texts[0] == texts[1] and wer(sentence, texts[0]) <= 0.35
    if utils.core.devices.cpu_supports_bf16():
        bf16 = load_transcriber("transformers", str(whisper_tiny_en_dir), compute_type="bfloat16")
        assert bf16.model.model.decoder.layers[0].fc1.weight.dtype == torch.bfloat16
        text = " ".join(s.text for s in bf16.transcribe(path, TranscribeOptions(language="en"))[0])
        assert wer(sentence, text) <= 0.35
    for dtype, message in [("int8", "compute_type=int8 is not one the transformers backend runs in; it takes "
                                    "float32, bfloat16, float16"),
                           ("float16", "compute_type=float16 on the transformers backend needs a CUDA GPU")]:
        with pytest.raises(ValueError, match=message):
            load_transcriber("transformers", str(whisper_tiny_en_dir), compute_type=dtype)
    monkeypatch.setattr(utils.core.devices, "cpu_supports_bf16", lambda: False)
    with pytest.raises(ValueError, match="needs AVX512-BF16 or AMX"):
        load_transcriber("transformers", str(whisper_tiny_en_dir), compute_type="bfloat16")


def test_registry_names_every_backend_and_its_constructor_options():
    import inspect

    from utils.inference.registry import BACKEND_CHOICES, BACKENDS

    assert BACKEND_CHOICES == ("auto", "transformers", "ct2", "ggml")
    for backend in BACKENDS.values():
        cls = backend.load_class()
        parameters = list(inspect.signature(cls.__init__).parameters)[2:]   # self, model_path
        assert tuple(parameters) == backend.options, backend.name
        assert cls.backend == backend.name


def test_auto_backend_follows_what_the_path_holds(tiny_whisper_dir, whisper_base_dir, tmp_path):
    from utils.core.models import GGML_MAGIC, ModelLoadError
    from utils.inference.registry import resolve_backend

    assert resolve_backend("auto", str(tiny_whisper_dir)) == "transformers"
    assert resolve_backend("auto", str(whisper_base_dir.parent / "whisper-base-ct2")) == "ct2"
    ggml = tmp_path / "model.bin"
    ggml.write_bytes(GGML_MAGIC.to_bytes(4, "little") + bytes(44))
    assert resolve_backend("auto", str(ggml)) == "ggml"
    assert resolve_backend("auto", "openai/whisper-base") == "transformers"   # a hub id, for online users
    for local in ("/nope", "./nope/x", "models/nope"):   # paths, not hub ids: missing, said so
        with pytest.raises(ModelLoadError, match="no such model file or folder"):
            resolve_backend("auto", local)
    assert resolve_backend("ct2", str(tiny_whisper_dir)) == "ct2"             # asked for by name: not second-guessed
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelLoadError, match="notes.txt: not a whisper.cpp GGML model file"):
        resolve_backend("auto", str(tmp_path / "notes.txt"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("x")
    with pytest.raises(ModelLoadError, match="not a model folder: it holds readme.md, but neither model.bin"):
        resolve_backend("auto", str(empty))
    with pytest.raises(ModelLoadError, match="no such model file or folder"):
        resolve_backend("auto", str(tmp_path / "missing"))


def test_backend_options_keep_what_a_backend_takes_and_refuse_the_rest():
    from utils.core.errors import UsageError
    from utils.inference.registry import backend_options

    flags = {"use_gpu": False, "batch_size": 4, "vad_filter": None, "cpu_threads": 2}
    assert backend_options("ct2", flags) == {"use_gpu": False, "batch_size": 4, "cpu_threads": 2}
    assert backend_options("ggml", {"cpu_threads": 2, "batch_size": 1}, defaults={"batch_size": 1}) == \
        {"cpu_threads": 2}
    with pytest.raises(UsageError, match="--batch_size applies only to --backend=transformers or ct2, not ggml"):
        backend_options("ggml", {"batch_size": 4}, defaults={"batch_size": 1})


def test_all_silent_audio_is_an_empty_transcript(tiny_whisper_dir):
    """Ten minutes of digital silence, and of a hiss under -60 dBFS, come back as no segments on the
    real tiny.en (which decodes silence into " you" per window) and on a random model (which decodes
    anything into garbage): answered without decoding."""
    from conftest import REPO, require_model

    silence = np.zeros(600 * SAMPLE_RATE, np.float32)
    hiss = (5e-4 * np.random.default_rng(0).uniform(-1, 1, silence.size)).astype(np.float32)
    for transcriber in (load_transcriber("ct2", str(require_model(REPO / "models" / "whisper-tiny.en-ct2"))),
                        load_transcriber("transformers", str(tiny_whisper_dir))):
        for audio in (silence, hiss):
            segments, info = transcriber.transcribe(audio, TranscribeOptions(temperature_increment_on_fallback=0))
            assert [s.text for s in segments] == [] and info.duration == pytest.approx(600.0)
            assert info.language == "en" and info.language_probability is None
        segments, info = transcriber.transcribe(silence, TranscribeOptions(language="en"))
        assert list(segments) == [] and info.language == "en"
