"""merge_lora.py: the merged folder is standalone and computes what base + adapter computes."""
from __future__ import annotations

import json

import pytest
import torch

import merge_lora


@pytest.fixture(scope="module")
def adapter_dir(tiny_whisper_dir, tmp_path_factory):
    from peft import LoraConfig, get_peft_model
    from transformers import WhisperForConditionalGeneration

    torch.manual_seed(1)
    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir)
    # Random (not zero) B matrices, so that a merge that dropped the adapter would change the logits.
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "fc1"], init_lora_weights=False)
    model = get_peft_model(model, config)
    out = tmp_path_factory.mktemp("adapter") / "checkpoint-best"
    model.save_pretrained(out)
    return out


def test_merged_model_loads_standalone_and_matches_base_plus_adapter(tiny_whisper_dir, adapter_dir, tmp_path, capsys):
    from peft import PeftModel
    from transformers import GenerationConfig, WhisperForConditionalGeneration, WhisperProcessor

    assert json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"] \
        == str(tiny_whisper_dir)
    assert merge_lora.main([f"--lora_model={adapter_dir}", f"--output_dir={tmp_path}"]) == 0
    out = tmp_path / f"{tiny_whisper_dir.name}-finetune"
    assert f"saved {out}" in capsys.readouterr().out
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                 "tokenizer_config.json", "preprocessor_config.json"):
        assert (out / name).is_file(), name
    assert not list(tmp_path.glob(".*")), "temporary folder left behind"
    # faster-whisper reads the feature extractor settings from this file alone.
    pre = json.loads((out / "preprocessor_config.json").read_text())
    assert pre["feature_size"] == 80 and pre["sampling_rate"] == 16000 and pre["hop_length"] == 160

    merged = WhisperForConditionalGeneration.from_pretrained(out).eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    reference = PeftModel.from_pretrained(WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir),
                                          adapter_dir).eval()
    base = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir).eval()
    torch.manual_seed(0)
    features = torch.randn(1, 80, 3000)
    decoder_ids = torch.tensor([[50258, 50260, 50359, 50363, 400, 500]])
    with torch.no_grad():
        got = merged(input_features=features, decoder_input_ids=decoder_ids).logits
        want = reference(input_features=features, decoder_input_ids=decoder_ids).logits
        plain = base(input_features=features, decoder_input_ids=decoder_ids).logits
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    assert (got - plain).abs().max() > 1e-2, "the adapter had no effect: merge test would prove nothing"

    processor = WhisperProcessor.from_pretrained(out)
    assert processor.tokenizer.convert_tokens_to_ids("<|zh|>") == 50260
    generation = GenerationConfig.from_pretrained(out)
    assert generation.lang_to_id["<|zh|>"] == 50260 and generation.is_multilingual


def _err(capsys):
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_a_folder_that_is_not_an_adapter_is_refused(tiny_whisper_dir, tmp_path, capsys):
    assert merge_lora.main([f"--lora_model={tiny_whisper_dir}", f"--output_dir={tmp_path}"]) == 2
    assert _err(capsys) == (f"error: {tiny_whisper_dir}: not a LoRA adapter folder (no adapter_config.json); pass "
                            f"a checkpoint-best or checkpoint-final folder written by finetune.py")
    assert merge_lora.main([f"--lora_model={tmp_path / 'missing'}", f"--output_dir={tmp_path}"]) == 2
    assert _err(capsys) == f"error: {tmp_path / 'missing'}: adapter folder not found"
    assert list(tmp_path.iterdir()) == []


def test_adapter_whose_base_model_is_gone_names_the_base(adapter_dir, tmp_path, capsys):
    moved = tmp_path / "adapter"
    moved.mkdir()
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "gone" / "whisper-base")
    (moved / "adapter_config.json").write_text(json.dumps(config))
    (moved / "adapter_model.safetensors").write_bytes((adapter_dir / "adapter_model.safetensors").read_bytes())
    assert merge_lora.main([f"--lora_model={moved}", f"--output_dir={tmp_path / 'out'}"]) == 2
    err = _err(capsys)
    assert err.startswith(f"error: {tmp_path / 'gone' / 'whisper-base'}: model folder not found") and \
        "tools/download_model.py" in err
    assert not (tmp_path / "out").exists()


def test_merged_folder_converts_for_faster_whisper(adapter_dir, tmp_path, capsys):
    import faster_whisper
    import numpy as np
    from ctranslate2.converters import TransformersConverter

    assert merge_lora.main([f"--lora_model={adapter_dir}", f"--output_dir={tmp_path}"]) == 0
    merged = next(tmp_path.glob("*-finetune"))
    ct2 = tmp_path / "ct2"
    TransformersConverter(str(merged), copy_files=["tokenizer.json", "preprocessor_config.json"]).convert(
        str(ct2), quantization="float32")
    # The converter takes the language ids from generation_config.lang_to_id, which the merge must keep.
    assert len(json.loads((ct2 / "config.json").read_text())["lang_ids"]) == 99
    model = faster_whisper.WhisperModel(str(ct2), device="cpu", compute_type="float32")
    assert model.feat_kwargs.get("feature_size") == 80, "preprocessor_config.json was not read"
    segments, info = model.transcribe(np.zeros(16000, dtype=np.float32), language="zh", max_new_tokens=2,
                                      without_timestamps=True)
    list(segments)
    assert info.duration == pytest.approx(1.0)
