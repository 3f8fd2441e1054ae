"""Stand-ins with the layouts of real corpora but next to no audio, so that a benchmark measures the toolkit's own
overhead at a corpus's size: manifests of any length over a few tiny clips, a long WenetSpeech-style source with
its WenetSpeech.json, and a tiny random Whisper (the real tokenizer, two layers of width 64)."""
from __future__ import annotations

import json
import os

import numpy as np

from utils.core.audio import SAMPLE_RATE, save_wav
from utils.core.files import promote_partial

SENTENCES = ["你好", "今天天气很好", "我们去公园", "谢谢你", "再见", "早上好", "晚上回家", "散步吧"]


def tiny_clips(folder: str, count: int = 8, seconds: float = 1.0) -> list:
    """`count` one-second tone clips; manifests cycle through them."""
    os.makedirs(folder, exist_ok=True)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    paths = []
    for i in range(count):
        path = os.path.join(folder, f"clip{i}.wav")
        if not os.path.exists(path):
            save_wav(path, (0.3 * np.sin(2 * np.pi * (200 + 60 * i) * t)).astype(np.float32))
        paths.append(path)
    return paths


def write_manifest(path: str, lines: int, clips: list, seconds: float = 1.0) -> str:
    """A jsonlines manifest of `lines` samples over `clips`, written a block at a time."""
    if os.path.exists(path) and sum(1 for _ in open(path, "rb")) == lines:
        return path
    with open(path, "w", encoding="utf-8") as f:
        for start in range(0, lines, 10000):
            f.write("".join(json.dumps({"audio": {"path": clips[i % len(clips)]},
                                        "sentence": SENTENCES[i % len(SENTENCES)], "language": "Chinese",
                                        "duration": seconds}, ensure_ascii=False) + "\n"
                            for i in range(start, min(lines, start + 10000))))
    return path


def long_source(path: str, seconds: int) -> str:
    """A mono 16 kHz Ogg/Opus file of `seconds` (a tone in faint noise), encoded a minute at a time."""
    if os.path.exists(path):
        return path
    import av

    rng = np.random.default_rng(0)
    partial = path + ".partial"
    with av.open(partial, "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=SAMPLE_RATE, layout="mono")
        for start in range(0, seconds, 60):
            t = np.arange(start * SAMPLE_RATE, min(seconds, start + 60) * SAMPLE_RATE) / SAMPLE_RATE
            audio = (0.2 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(audio[None, :], format="flt", layout="mono")
            frame.sample_rate, frame.pts = SAMPLE_RATE, start * SAMPLE_RATE
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    promote_partial(partial, path)
    return path


def wenetspeech_json(path: str, source: str, seconds: int, segment: float = 4.0, gap: float = 1.0) -> str:
    """WenetSpeech.json with one audio entry: `source`, a labelled segment every `segment` + `gap` seconds."""
    segments, begin, i = [], 0.5, 0
    while begin + segment <= seconds:
        segments.append({"sid": f"Y0000_S{i:05d}", "begin_time": round(begin, 2), "end_time": round(begin + segment, 2),
                         "text": SENTENCES[i % len(SENTENCES)], "confidence": 1.0, "subsets": ["S", "M", "L"]})
        begin, i = begin + segment + gap, i + 1
    data = {"dataset": "WenetSpeech", "audios": [{"aid": "Y0000", "path": os.path.abspath(source),
                                                  "duration": seconds, "segments": segments}]}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)
    return path


def tiny_random_whisper(output_dir: str, source_dir: str, seed: int = 0) -> str:
    """A 2-layer, d_model=64 random Whisper with `source_dir`'s tokenizer, processor and generation config."""
    if os.path.isfile(os.path.join(output_dir, "model.safetensors")):
        return output_dir
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration, WhisperProcessor

    source = WhisperConfig.from_pretrained(source_dir)
    config = WhisperConfig(vocab_size=source.vocab_size, num_mel_bins=source.num_mel_bins, d_model=64,
                           encoder_layers=2, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
                           encoder_ffn_dim=128, decoder_ffn_dim=128, max_source_positions=1500,
                           max_target_positions=448, pad_token_id=source.pad_token_id,
                           bos_token_id=source.bos_token_id, eos_token_id=source.eos_token_id,
                           decoder_start_token_id=source.decoder_start_token_id)
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig.from_pretrained(source_dir)
    model.generation_config.alignment_heads = [[1, 0], [1, 1]]   # the source's heads do not exist here
    model.save_pretrained(output_dir)
    processor = WhisperProcessor.from_pretrained(source_dir)
    processor.save_pretrained(output_dir)
    processor.feature_extractor.save_pretrained(output_dir)
    return output_dir
