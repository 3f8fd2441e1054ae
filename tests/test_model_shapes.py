"""Models shaped like large-v3 (128 mel bins, 51866 tokens with yue) and large-v3-turbo (4 decoder layers),
tiny and random, through every stage: one training step, merge, CT2 and GGML export, transcription by
each backend, the server's language check. Plus what no model may do: a language outside the model's own
set, a GGML file whisper.cpp cannot load, mel bins that disagree, segments past the end of the audio."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from training_fixtures import make_corpus

from utils.core.audio import SAMPLE_RATE
from utils.core.errors import UserError
from utils.core.models import ModelLoadError
from utils.inference.registry import load_transcriber
from utils.inference.transcriber import TranscribeOptions

CLIP_SECONDS = 3.82
YUE_ID = 50358   # large-v3 puts <|yue|> after <|su|>, moving every later token up by one


def _v3_tokenizer_file(source: Path, out: Path) -> Path:
    """whisper-base's tokenizer.json with <|yue|> inserted at 50358, as large-v3's vocabulary has it."""
    spec = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
    for token in spec["added_tokens"]:
        token["id"] += token["id"] >= YUE_ID
    yue = dict(next(t for t in spec["added_tokens"] if t["content"] == "<|su|>"), id=YUE_ID, content="<|yue|>")
    spec["added_tokens"].insert(YUE_ID - 50257, yue)
    for special in spec["post_processor"]["special_tokens"].values():
        special["ids"] = [i + (i >= YUE_ID) for i in special["ids"]]
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    return out / "tokenizer.json"


def build_v3_shaped(out: Path, source: Path, decoder_layers: int, seed: int = 0) -> Path:
    """A random d_model=64 Whisper with large-v3's vocabulary (51866 tokens) and 128 mel bins; MLPs
    4 x d_model wide, as whisper.cpp needs."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

    from utils.export.ct2_import import build_generation_config

    tokenizer_file = _v3_tokenizer_file(source, out / "tok")
    specials = [t["content"] for t in json.loads(tokenizer_file.read_text())["added_tokens"]
                if t["special"] and t["content"] != "<|endoftext|>"]
    tokenizer = WhisperTokenizer(tokenizer_file=str(tokenizer_file), extra_special_tokens=specials)
    assert len(tokenizer) == 51866 and tokenizer.convert_tokens_to_ids("<|yue|>") == YUE_ID
    generation = build_generation_config(tokenizer, is_multilingual=True,
                                         alignment_heads=[[decoder_layers - 1, 0], [decoder_layers - 1, 1]])
    config = WhisperConfig(
        vocab_size=51866, num_mel_bins=128, d_model=64, encoder_layers=2, decoder_layers=decoder_layers,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=256, decoder_ffn_dim=256,
        max_source_positions=1500, max_target_positions=448, pad_token_id=generation.pad_token_id,
        bos_token_id=generation.bos_token_id, eos_token_id=generation.eos_token_id,
        decoder_start_token_id=generation.decoder_start_token_id)
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    generation.max_length = 24   # random weights: keep every window short
    model.generation_config = generation
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    WhisperFeatureExtractor(feature_size=128).save_pretrained(out)
    shutil.rmtree(out / "tok")
    return out


@pytest.fixture(scope="module")
def shaped(tmp_path_factory, whisper_base_dir):
    from utils.core.audio import save_wav

    root = tmp_path_factory.mktemp("shapes")
    t = np.arange(int(CLIP_SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    clip = root / "clip.wav"
    save_wav(clip, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))
    return SimpleNamespace(root=root, clip=clip, v3=build_v3_shaped(root / "large-v3", whisper_base_dir, 2),
                           turbo=build_v3_shaped(root / "large-v3-turbo", whisper_base_dir, 4, seed=1))


def _error(capsys, main, argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    return code, err.splitlines()[-1] if err else ""


def test_v3_shape_trains_merges_exports_and_transcribes(shaped, capsys):
    """large-v3's shape through finetune (one step), merge_lora, the CT2 and GGML exports, and
    transcription by every backend, in yue, which only this vocabulary has."""
    import finetune
    import merge_lora
    from utils.export.ct2_export import export_ct2
    from utils.export.ggml import export_ggml

    train, test = make_corpus(shaped.root / "corpus", n_train=2, n_test=1)
    out = shaped.root / "run"
    code = finetune.main([f"--base_model={shaped.v3}", f"--train_data={train}", f"--test_data={test}",
                          f"--output_dir={out}", "--max_steps=1", "--eval_steps=1", "--save_steps=1",
                          "--per_device_train_batch_size=2", "--per_device_eval_batch_size=1", "--num_workers=0",
                          "--lora_r=2", "--lora_alpha=4", "--generation_max_length=4", "--warmup_steps=0",
                          "--language=yue", "--local_files_only=True"])
    assert code == 0, capsys.readouterr().err[-2000:]
    adapter = next(out.glob("**/checkpoint-final"))
    assert merge_lora.main([f"--lora_model={adapter}", f"--output_dir={shaped.root / 'merged'}"]) == 0
    merged = shaped.root / "merged" / "large-v3-finetune"
    assert json.loads((merged / "config.json").read_text())["num_mel_bins"] == 128
    ct2 = export_ct2(str(merged), str(shaped.root / "ct2"), None, force=True)
    assert ct2.n_mels == 128
    summary = export_ggml(str(merged), str(shaped.root / "v3.bin"), progress=False)
    assert (summary["n_mels"], summary["vocab"]) == (128, 50257)
    capsys.readouterr()
    for backend, path in (("transformers", merged), ("ct2", shaped.root / "ct2"), ("ggml", shaped.root / "v3.bin")):
        transcriber = load_transcriber(backend, str(path))
        assert len(transcriber.languages) == 100 and transcriber.languages[-1] == "yue", backend
        options = TranscribeOptions(language="yue", beam_size=1, temperature_increment_on_fallback=0)
        segments, info = transcriber.transcribe(str(shaped.clip), options)
        segments = list(segments)
        assert info.language == "yue" and info.duration == pytest.approx(CLIP_SECONDS, abs=1e-3), backend
        assert all(0 <= s.start <= s.end <= info.duration for s in segments), (backend, segments)


def test_turbo_shape_exports_and_transcribes(shaped, tmp_path):
    """large-v3-turbo's 4 decoder layers under a 2-layer encoder, in transformers and whisper.cpp."""
    from utils.export.ggml import export_ggml

    export_ggml(str(shaped.turbo), str(tmp_path / "turbo.bin"), quantization="q8_0", progress=False)
    for backend, path in (("transformers", shaped.turbo), ("ggml", tmp_path / "turbo.bin")):
        transcriber = load_transcriber(backend, str(path))
        segments, info = transcriber.transcribe(str(shaped.clip), TranscribeOptions(
            language="zh", temperature_increment_on_fallback=0))
        assert all(0 <= s.start <= s.end <= info.duration for s in segments), backend
    assert transcriber.header["n_text_layer"] == 4 and transcriber.header["n_audio_layer"] == 2


def test_languages_are_the_models_own(shaped, tiny_whisper_dir):
    """yue exists for 51866 tokens only: refused for a 99-language model in one sentence, by the
    transcriber and by the server (400 naming the form field), accepted for large-v3's shape."""
    from fastapi.testclient import TestClient

    from utils.apps.server.app import create_app
    from utils.apps.server.settings import ServerSettings

    base = load_transcriber("transformers", str(tiny_whisper_dir))
    assert len(base.languages) == 99 and "yue" not in base.languages
    with pytest.raises(UserError) as refused:
        base.transcribe(str(shaped.clip), TranscribeOptions(language="Cantonese"))
    assert str(refused.value) == "language 'yue' is not one of this model's 99 languages (large-v3 models add yue)"
    audio = shaped.clip.read_bytes()
    with TestClient(create_app(base, ServerSettings(model_name="tiny", temperature_increment_on_fallback=0))) as client:
        response = client.post("/recognition", files={"audio": ("clip.wav", audio)}, data={"language": "yue"})
        assert response.status_code == 400
        assert response.json()["msg"] == ("form field 'language': language 'yue' is not one of the served model's "
                                          "99 languages (large-v3 models add yue)")
        page = client.get("/").text
        assert '"zh": "chinese"' in page and '"yue"' not in page
    v3 = load_transcriber("transformers", str(shaped.v3))
    with TestClient(create_app(v3, ServerSettings(model_name="v3", temperature_increment_on_fallback=0))) as client:
        response = client.post("/recognition", files={"audio": ("clip.wav", audio)}, data={"language": "yue"})
        assert response.status_code == 200 and response.json()["language"] == "yue"
        assert '"yue": "cantonese"' in client.get("/").text


def test_finetune_refuses_a_language_the_tokenizer_lacks(tiny_whisper_dir, tmp_path, capsys):
    import finetune

    train, test = make_corpus(tmp_path / "corpus", n_train=2, n_test=1)
    code, err = _error(capsys, finetune.main, [f"--base_model={tiny_whisper_dir}", f"--train_data={train}",
                                               f"--test_data={test}", f"--output_dir={tmp_path / 'out'}",
                                               "--language=yue", "--local_files_only=True"])
    assert (code, err) == (2, f"error: --language=yue: language 'yue' is not one of {tiny_whisper_dir}'s "
                              f"99 languages (large-v3 models add yue)")
    assert not (tmp_path / "out").exists()


def _narrow_ggml(model_dir: Path, out: Path, monkeypatch) -> Path:
    """A GGML file of a model whose MLPs are 2 x d_model wide, written as a careless converter would
    (without convert-ggml.py's width check)."""
    import torch
    from transformers import WhisperForConditionalGeneration

    from utils.export import ggml

    monkeypatch.setattr(ggml, "_load_representable_model",
                        lambda path: WhisperForConditionalGeneration.from_pretrained(path, dtype=torch.float32))
    monkeypatch.setattr(ggml, "_check_loads", lambda path: None)
    ggml.export_ggml(str(model_dir), str(out), progress=False)
    monkeypatch.undo()
    return out


def test_ggml_files_whisper_cpp_cannot_load_are_refused(shaped, tiny_whisper_dir, tmp_path, monkeypatch, capsys):
    """A truncated file, a narrow-MLP model and a header whisper.cpp rejects: one sentence each, and this
    process (which whisper.cpp would have crashed) carries on."""
    import importlib

    from utils.export.ggml import export_ggml

    convert = importlib.import_module("convert-ggml")
    good = tmp_path / "good.bin"
    export_ggml(str(shaped.turbo), str(good), quantization="q5_0", progress=False)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(data[:len(data) * 2 // 3])
    with pytest.raises(ModelLoadError) as refused:
        load_transcriber("ggml", str(truncated))
    assert str(refused.value) == (f"{truncated}: the GGML file is truncated ({truncated.stat().st_size} bytes); "
                                  f"export or download it again")

    narrow = _narrow_ggml(tiny_whisper_dir, tmp_path / "narrow.bin", monkeypatch)
    with pytest.raises(ModelLoadError) as refused:
        load_transcriber("auto", str(narrow))
    assert str(refused.value) == (f"{narrow}: tensor encoder.blocks.0.mlp.0.weight is 128 x 64 but whisper.cpp "
                                  f"expects 256 x 64 for this header; whisper.cpp makes every MLP 4 x d_model wide")
    code, err = _error(capsys, convert.main, [f"--model_dir={tiny_whisper_dir}", f"--output_path={tmp_path / 'x.bin'}"])
    assert (code, err) == (2, f"error: {tiny_whisper_dir}: the encoder's MLPs are 128 wide, but whisper.cpp "
                              f"assumes 4 x d_model = 256; it could not load this model")
    assert not (tmp_path / "x.bin").exists()

    # A table that fits its header, with a file type whisper.cpp does not know: only the real load finds it.
    bad_type = tmp_path / "bad-ftype.bin"
    bad_type.write_bytes(data[:44] + (999).to_bytes(4, "little") + data[48:])
    with pytest.raises(ModelLoadError) as refused:
        load_transcriber("ggml", str(bad_type))
    assert str(refused.value) == (f"{bad_type}: whisper.cpp cannot load this GGML file although its header and "
                                  f"tensor table look right; export it again with convert-ggml.py")
    segments, _ = load_transcriber("ggml", str(good)).transcribe(str(shaped.clip), TranscribeOptions(language="en"))
    assert isinstance(list(segments), list)


def test_mismatched_mel_bins_are_one_sentence(shaped, tiny_whisper_dir, tmp_path, capsys):
    import infer

    folder = tmp_path / "v3-with-80-mel-processor"
    shutil.copytree(shaped.v3, folder)
    shutil.copy(tiny_whisper_dir / "preprocessor_config.json", folder / "preprocessor_config.json")
    code, err = _error(capsys, infer.main, [f"--audio_path={shaped.clip}", f"--model_path={folder}"])
    assert (code, err) == (2, f"error: {folder}: config.json's model takes 128 mel bins (num_mel_bins) but "
                              f"preprocessor_config.json makes 80 (feature_size); copy the processor files of "
                              f"the model it came from")


def test_ct2_segment_ends_stay_within_the_audio():
    """faster-whisper may end the last segment at its window's end (4.0 s for a 3.82 s clip)."""
    from utils.inference.backends.ct2 import CT2Transcriber

    decoder = dict(words=None, seek=0, tokens=[], temperature=0.0, avg_logprob=-0.1, compression_ratio=1.0,
                   no_speech_prob=0.01)      # the rest of what a faster-whisper segment carries
    raw = [SimpleNamespace(start=0.0, end=2.0, text=" one", **decoder),
           SimpleNamespace(start=2.0, end=4.0, text=" two", **decoder)]
    converted = list(CT2Transcriber._convert(raw, CLIP_SECONDS))
    assert [(s.start, s.end, s.text) for s in converted] == [(0.0, 2.0, "one"), (2.0, CLIP_SECONDS, "two")]
