"""Shared fixtures: a tiny random multilingual Whisper that shares whisper-base's real tokenizer."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

WHISPER_BASE = REPO / "models" / "whisper-base"
WHISPER_TINY_EN = REPO / "models" / "whisper-tiny.en"
ARTIFACTS = REPO / "test-artifacts"

# Tests are run offline; a stray hub lookup must fail fast instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def require_model(path: Path) -> Path:
    """Real-model tests fail (not skip) when the fetched model is missing: `make test` fetches it."""
    if not (path / "config.json").exists():
        pytest.fail(f"{path} is missing: run `make models` "
                    f"(python tools/download_model.py --model={path.name})")
    return path


@pytest.fixture(scope="session")
def whisper_base_dir() -> Path:
    return require_model(WHISPER_BASE)


@pytest.fixture(scope="session")
def whisper_tiny_en_dir() -> Path:
    return require_model(WHISPER_TINY_EN)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def build_tiny_whisper(output_dir: Path, source_dir: Path, seed: int = 0) -> Path:
    """Save a 2-layer, d_model=64 random Whisper with source_dir's tokenizer, processor and
    generation config (language/task ids are token ids, so they carry over unchanged)."""
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration, WhisperProcessor

    processor = WhisperProcessor.from_pretrained(source_dir)
    source_config = WhisperConfig.from_pretrained(source_dir)
    config = WhisperConfig(
        vocab_size=source_config.vocab_size,
        num_mel_bins=source_config.num_mel_bins,
        d_model=64, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=128, decoder_ffn_dim=128,
        max_source_positions=1500, max_target_positions=448,
        pad_token_id=source_config.pad_token_id,
        bos_token_id=source_config.bos_token_id,
        eos_token_id=source_config.eos_token_id,
        decoder_start_token_id=source_config.decoder_start_token_id,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    generation_config = GenerationConfig.from_pretrained(source_dir)
    # Alignment heads refer to layers/heads of the source model; point them into the tiny one.
    generation_config.alignment_heads = [[1, 0], [1, 1]]
    model.generation_config = generation_config
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    processor.feature_extractor.save_pretrained(output_dir)
    return output_dir


@pytest.fixture(scope="session")
def tiny_whisper_dir(tmp_path_factory, whisper_base_dir) -> Path:
    """A tiny random multilingual Whisper (transformers folder) with whisper-base's tokenizer."""
    return build_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper"), whisper_base_dir)
