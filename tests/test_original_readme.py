"""The original Whisper-Finetune README's commands, replayed with our small models.

Each command keeps the original's flags and spelling (`--flag=value`, a transformers folder for the
server, its speed-up flags); only the model paths name what this machine has: whisper-tiny.en for the
fine-tuned model the README assumes, the tiny random Whisper for the training commands. They run in a
scratch folder holding `dataset/` (a link to ours), so that files the commands write by default land
there.
"""
from __future__ import annotations

import importlib
import json
import re

import pytest
import requests
from conftest import REPO
from server_process import ServerProcess
from transcription_audio import english_clip, wer

from utils.core.cli import parse_args

SAMPLE = "dataset/sample_en.wav"
SAMPLE_TEXT = (REPO / "dataset" / "sample_en.txt").read_text(encoding="utf-8")
TINY_EN_CT2 = REPO / "models" / "whisper-tiny.en-ct2"


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    (tmp_path / "dataset").symlink_to(REPO / "dataset")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def main_of(script: str):
    return importlib.import_module(script.removesuffix(".py")).main


def printed_segments(out: str) -> list[str]:
    return [line.split("] ", 1)[1] for line in out.splitlines() if re.match(r"\[\d+\.\d\d - \d+\.\d\d\] ", line)]


@pytest.mark.parametrize("script, model", [("infer.py", "whisper_tiny_en_dir"), ("infer_ct2.py", None)])
def test_infer_commands_as_written(script, model, workdir, request, capsys):
    """`python infer.py --audio_path=dataset/test.wav --model_path=models/whisper-tiny-finetune` and the
    infer_ct2.py line: the text printed, and (our addition, as openai-whisper) every format written."""
    model_path = request.getfixturevalue(model) if model else TINY_EN_CT2
    assert main_of(script)([f"--audio_path={SAMPLE}", f"--model_path={model_path}"]) == 0
    out = capsys.readouterr().out
    assert wer(SAMPLE_TEXT, " ".join(printed_segments(out))) <= 0.05, out
    assert "; wrote output/sample_en.{txt,srt,vtt,tsv,json}\n" in out
    written = sorted(p.name for p in (workdir / "output").iterdir())
    assert written == [f"sample_en.{ext}" for ext in ("json", "srt", "tsv", "txt", "vtt")]
    data = json.loads((workdir / "output" / "sample_en.json").read_text(encoding="utf-8"))
    assert data["language"] == "en" and wer(SAMPLE_TEXT, data["text"]) <= 0.05


def test_assistant_model_is_speculative_decoding(whisper_tiny_en_dir, workdir, capsys):
    """--assistant_model_path: generate's assistant_model. Greedy speculative decoding gives exactly the
    main model's text; the assistant here is the same small model, the only one sharing its tokenizer."""
    clip, _ = english_clip(1)
    texts = []
    for extra in ([], [f"--assistant_model_path={whisper_tiny_en_dir}"]):
        assert main_of("infer.py")([f"--audio_path={clip}", f"--model_path={whisper_tiny_en_dir}",
                                    "--output_format=none", *extra]) == 0
        texts.append(printed_segments(capsys.readouterr().out))
    assert texts[0] and texts[1] == texts[0]


@pytest.mark.parametrize("flag, message", [
    ("--use_bettertransformer=True", "--use_bettertransformer: optimum's BetterTransformer is obsolete"),
    ("--use_flash_attention_2=True", "--use_flash_attention_2: flash_attention_2 needs a CUDA GPU (--use_gpu) and "
                                     "the flash-attn package, which is not installed here"),
])
@pytest.mark.parametrize("script", ["infer.py", "infer_server.py", "infer_gui.py"])
def test_obsolete_or_unavailable_speed_ups_are_one_sentence(script, flag, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        main_of(script)([f"--model_path={REPO / 'models' / 'whisper-base'}", f"--audio_path={SAMPLE}", flag]
                        if script == "infer.py" else [f"--model_path={REPO / 'models' / 'whisper-base'}", flag])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.count("\n") == 1 and message in err, err


def test_infer_ct2_takes_the_original_worker_count(capsys):
    """The original infer_ct2.py printed `num_workers: 1`; one file at a time, more is refused."""
    import infer_ct2

    assert parse_args(infer_ct2.InferCT2Arguments, [f"--audio_path={SAMPLE}", "--num_workers=1"]).num_workers == 1
    with pytest.raises(SystemExit) as stopped:
        infer_ct2.main([f"--audio_path={SAMPLE}", "--num_workers=2"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.count("\n") == 1
    assert "--num_workers=2: infer_ct2.py transcribes one file after the other" in err and "infer_server.py" in err


def test_server_speed_up_flags_reach_the_transformers_backend(whisper_tiny_en_dir):
    import infer_server

    args = parse_args(infer_server.ServerArguments, [
        "--host=0.0.0.0", "--port=5000", f"--model_path={whisper_tiny_en_dir}", "--num_workers=2",
        "--use_compile=True", f"--assistant_model_path={whisper_tiny_en_dir}", "--batch_size=1"])
    backend = infer_server.resolve_backend(args.backend, args.model_path)
    assert backend == "transformers"
    assert infer_server.engine_options(args, backend) == {
        "use_compile": True, "assistant_model_path": str(whisper_tiny_en_dir)}
    ct2 = parse_args(infer_server.ServerArguments, [f"--model_path={TINY_EN_CT2}", "--use_compile=True"])
    with pytest.raises(Exception, match=r"--use_compile applies only to --backend=transformers, not ct2"):
        infer_server.engine_options(ct2, infer_server.resolve_backend(ct2.backend, ct2.model_path))


def test_server_command_on_a_transformers_folder(whisper_tiny_en_dir, tmp_path):
    """`python infer_server.py --host=0.0.0.0 --port=5000 --model_path=models/whisper-tiny-finetune
    --num_workers=2`: the folder picks the transformers backend, and /recognition answers as the
    original's did."""
    server = ServerProcess("--host=0.0.0.0", f"--model_path={whisper_tiny_en_dir}", "--num_workers=2",
                           "--warmup=False", log_path=tmp_path / "server.log").wait_ready()
    try:
        assert "on the transformers backend" in server.log()
        with open(REPO / SAMPLE, "rb") as audio:
            response = requests.post(f"{server.url}/recognition", timeout=120,
                                     files=[("audio", ("sample_en.wav", audio, "audio/wav"))],
                                     data={"language": "en"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["code"] == 0
        assert wer(SAMPLE_TEXT, " ".join(r["text"] for r in body["results"])) <= 0.05, body
    finally:
        server.stop()


def test_training_commands_parse_and_validate(tiny_whisper_dir, workdir, capsys):
    """finetune.py, merge_lora.py and evaluation.py as the README writes them: the flags parse into the
    values the README means, and what they name is checked before anything loads."""
    import evaluation
    import finetune
    import merge_lora

    args = parse_args(finetune.FinetuneArguments, [f"--base_model={tiny_whisper_dir}", "--output_dir=output/"])
    assert (args.base_model, args.output_dir) == (str(tiny_whisper_dir), "output/")
    finetune.check_inputs(args)     # the sample corpus in dataset/ is what it trains on by default
    merged = parse_args(merge_lora.MergeArguments, ["--lora_model=output/whisper-tiny/checkpoint-best/",
                                                    "--output_dir=models/"])
    assert (merged.lora_model, merged.output_dir) == ("output/whisper-tiny/checkpoint-best/", "models/")
    assert merge_lora.main(["--lora_model=output/whisper-tiny/checkpoint-best/", "--output_dir=models/"]) == 2
    assert "output/whisper-tiny/checkpoint-best" in capsys.readouterr().err
    scored = parse_args(evaluation.EvaluationArguments, [f"--model_path={tiny_whisper_dir}", "--metric=cer"])
    assert scored.metric == "cer" and scored.test_data == "dataset/zh_test.jsonl"
    evaluation.check_inputs(scored)
