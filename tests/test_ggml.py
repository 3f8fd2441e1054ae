"""GGML export proven by whisper.cpp itself (pywhispercpp): same text as transformers, greedy."""
import struct
import subprocess
import sys

import pytest
import torch
from transcription_audio import REPO, english_clip, normalize

from utils.core.models import read_ggml_header
from utils.inference.registry import load_transcriber
from utils.inference.transcriber import TranscribeOptions

pytestmark = pytest.mark.slow


def export(model_dir, output_path):
    result = subprocess.run([sys.executable, str(REPO / "convert-ggml.py"), f"--model_dir={model_dir}",
                             f"--output_path={output_path}"], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"wrote {output_path}" in result.stdout
    return output_path


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


def test_tiny_export_layout(tmp_path, tiny_whisper_dir):
    out = export(tiny_whisper_dir, tmp_path / "tiny.bin")
    header = read_ggml_header(str(out))
    assert header == {"n_vocab": 51865, "n_audio_ctx": 1500, "n_audio_state": 64, "n_audio_head": 2,
                      "n_audio_layer": 2, "n_text_ctx": 448, "n_text_state": 64, "n_text_head": 2,
                      "n_text_layer": 2, "n_mels": 80, "ftype": 1}
    with open(out, "rb") as file:
        file.seek(48)
        assert struct.unpack("<2i", file.read(8)) == (80, 201)
    # whisper.cpp itself accepts every tensor name and shape.
    transcriber = load_transcriber("ggml", str(out), cpu_threads=1)
    assert transcriber.multilingual
    with pytest.raises(ValueError, match="not a whisper.cpp GGML model file"):
        load_transcriber("ggml", str(tiny_whisper_dir / "config.json"))


def test_whisper_base_export_transcribes_like_transformers(tmp_path, whisper_base_dir):
    same_text_in_both_engines(whisper_base_dir, export(whisper_base_dir, tmp_path / "base.bin"), 6)


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
    same_text_in_both_engines(merged_dir, export(merged_dir, tmp_path / "merged.bin"), 6)
