"""Small generated corpora and helpers shared by the finetune/merge/evaluation/distributed tests."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SENTENCES = ["你好", "今天天气很好", "我们去公园", "谢谢你", "再见", "早上好"]


def make_corpus(root: Path, n_train: int = 4, n_test: int = 2, seconds: float = 1.0) -> tuple[Path, Path]:
    """Tone clips with short Chinese sentences (a no-speech clip among the test clips): enough for a tiny
    random model to fit, and as cheap as audio gets (every clip becomes a 30 s spectrogram anyway)."""
    from utils.core.audio import SAMPLE_RATE, save_wav

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE

    def clip(i: int, silent: bool = False) -> str:
        path = root / f"clip{i}.wav"
        audio = 0.01 * rng.standard_normal(t.size)
        if not silent:
            audio += 0.3 * np.sin(2 * np.pi * (200 + 60 * i) * t)
        save_wav(path, audio.astype(np.float32))
        return str(path)

    def write(path: Path, lines: list[dict]) -> Path:
        path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
        return path

    train = [{"audio": {"path": clip(i)}, "sentence": SENTENCES[i % len(SENTENCES)], "language": "Chinese",
              "duration": seconds} for i in range(n_train)]
    test = [{"audio": {"path": clip(100 + i, silent=(i == n_test - 1))},
             "sentence": "" if i == n_test - 1 else SENTENCES[i % len(SENTENCES)], "sentences": [],
             "duration": seconds} for i in range(n_test)]
    return write(root / "train.jsonl", train), write(root / "test.jsonl", test)


def run_script(args: list[str], timeout: float = 300, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO))
    env.update(env_extra or {})
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def finetune_args(model_dir: Path, train: Path, test: Path, out: Path, **overrides) -> list[str]:
    """finetune.py flags for a seconds-long run on a tiny model."""
    flags = {"base_model": model_dir, "train_data": train, "test_data": test, "output_dir": out,
             "max_steps": 4, "eval_steps": 2, "save_steps": 2, "logging_steps": 1,
             "per_device_train_batch_size": 2, "per_device_eval_batch_size": 2, "num_workers": 0,
             "lora_r": 4, "lora_alpha": 8, "generation_max_length": 4, "warmup_steps": 0,
             "learning_rate": 1e-2, "language": "Chinese", "local_files_only": True}
    flags.update(overrides)
    return [f"--{k}={v}" for k, v in flags.items()]


def python() -> str:
    return sys.executable
