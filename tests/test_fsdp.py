"""Sharded training: FSDP2 as configs/accelerate_fsdp.yaml lays it out holds half the model in each of two CPU
processes (gloo) and takes the step one process takes; finetune.py refuses accelerate's FSDP where accelerate would
silently not shard."""
from __future__ import annotations

import importlib.util
import re
import sys

import pytest
from training_fixtures import REPO, finetune_args, make_corpus, python, run_script

import finetune

pytestmark = pytest.mark.slow

LINE = re.compile(r"rank (\d)/(\d): holds ([0-9.]+) of ([0-9.]+) MiB of parameters \(\d+%\), optimizer state "
                  r"([0-9.]+) MiB; (\d+) layers \+ the model sharded; loss ([0-9.]+), grad norm ([0-9.]+)")


def _ranks(text):
    return {int(m[0]): dict(world=int(m[1]), held=float(m[2]), full=float(m[3]), optimizer=float(m[4]),
                            layers=int(m[5]), loss=float(m[6]), grad_norm=float(m[7])) for m in LINE.findall(text)}


def _check_fsdp():
    spec = importlib.util.spec_from_file_location("check_fsdp", REPO / "tools" / "check_fsdp.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_two_processes_each_hold_half_and_take_the_single_process_step(tiny_whisper_dir, tmp_path, capsys):
    train, _ = make_corpus(tmp_path, n_train=4, n_test=1)
    flags = [f"--base_model={tiny_whisper_dir}", f"--train_data={train}", "--global_batch_size=4"]
    two = run_script([python(), "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                      "tools/check_fsdp.py", *flags, f"--save_dir={tmp_path / 'two'}"])
    assert two.returncode == 0, two.stderr[-3000:]
    # the reference: one process, in this one
    assert _check_fsdp().main([*flags, f"--save_dir={tmp_path / 'one'}"]) == 0
    one = capsys.readouterr().out
    reference, ranks = _ranks(one)[0], _ranks(two.stdout)
    assert sorted(ranks) == [0, 1] and reference["held"] == reference["full"], (one, two.stdout)
    # The tiny model's 2 encoder and 2 decoder layers are wrapped as the config names them.
    assert reference["layers"] == 4
    for rank in ranks.values():
        assert rank["full"] == reference["full"]
        # Half of every parameter (FSDP2 splits each along its first dimension), and half the AdamW moments.
        assert rank["held"] == pytest.approx(reference["full"] / 2, rel=0.01)
        assert rank["optimizer"] == pytest.approx(reference["optimizer"] / 2, rel=0.01)
        # Means over each process's clips, averaged: the one-process mean up to the tokens' weighting.
        assert rank["loss"] == pytest.approx(reference["loss"], rel=0.01)
        assert rank["grad_norm"] == pytest.approx(reference["grad_norm"], rel=0.02)
    assert sum(rank["held"] for rank in ranks.values()) == pytest.approx(reference["full"], rel=0.01)

    # The adapter saved after the sharded step holds whole tensors (not process 0's half), trained: the
    # one-process adapter's shapes and, up to the step's loss weighting, its values.
    from safetensors.torch import load_file

    assert f"adapter saved to {tmp_path / 'two'} (gathered from 2 shards)" in two.stdout
    sharded = load_file(tmp_path / "two" / "adapter_model.safetensors")
    single = load_file(tmp_path / "one" / "adapter_model.safetensors")
    assert sorted(sharded) == sorted(single) and len(single) > 0
    moved = 0
    for name, tensor in single.items():
        assert sharded[name].shape == tensor.shape, name
        if "lora_B" in name:                  # zero before the step: what it holds now is the step
            moved += int(tensor.abs().sum() > 0)
            agree = (sharded[name] - tensor).abs() <= 0.1 * tensor.abs().max()
            assert agree.float().mean() > 0.9, name
    assert moved == sum("lora_B" in name for name in single)


def test_finetune_refuses_accelerate_fsdp_without_gpus(tiny_whisper_dir, tmp_path, monkeypatch, capsys):
    train, test = make_corpus(tmp_path, n_train=1, n_test=1)
    # What `accelerate launch --config_file configs/accelerate_fsdp.yaml` sets for every process.
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    code = finetune.main([str(a) for a in finetune_args(tiny_whisper_dir, train, test, tmp_path / "out")])
    assert code != 0
    assert "accelerate's FSDP needs GPUs" in capsys.readouterr().err
    assert (REPO / "configs" / "accelerate_fsdp.yaml").is_file()
