"""finetune.py under torchrun and accelerate launch: two real processes on CPU (gloo) train one adapter.

No port is picked here and handed over (another process could take it in between): both launchers run
torchrun's standalone rendezvous, whose store binds a free port itself and serves the workers too. The
two-"machine" run is the exception: its agents must agree on a port before either starts.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import tempfile

import pytest
from conftest import REPO
from safetensors.torch import load_file
from training_fixtures import finetune_args, make_corpus, python, run_script

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"), n_train=8, n_test=2)


def _check_run(res, run_dir, metric_key):
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    for rank in (0, 1):
        assert f"rank {rank}/2: finished 2 steps (gloo)" in res.stdout, res.stdout[-2000:]
    assert "done: 2 steps" in res.stdout
    # Under DDP every process holds the whole model (FSDP would hold about half: docs/scale.md).
    assert re.search(r"rank 1/2: holds ([0-9.]+) of \1 MiB of parameters \(100%\)", res.stdout), res.stdout[-2000:]
    state = json.loads((run_dir / "checkpoint-2" / "trainer_state.json").read_text())
    # 8 clips, 2 per process, 2 processes: 2 optimizer steps make one epoch only when both ranks take batches.
    assert state["global_step"] == 2 and state["epoch"] == pytest.approx(1.0)
    assert any(metric_key in e for e in state["log_history"])
    assert (run_dir / "checkpoint-final" / "adapter_model.safetensors").is_file()
    assert (run_dir / "checkpoint-best" / "adapter_model.safetensors").is_file()


def test_torchrun_two_processes(tiny_whisper_dir, corpus, tmp_path):
    # With a frozen encoder the encoder cache is on: the ranks store the outputs of the clips they meet.
    res = run_script([python(), "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                      "finetune.py", *finetune_args(tiny_whisper_dir, *corpus, tmp_path, max_steps=2,
                                                    num_train_epochs=1, freeze_encoder=True)])
    _check_run(res, tmp_path / tiny_whisper_dir.name, "eval_cer")
    # One epoch over 8 clips split between two ranks: every clip stored once, by the rank that trained on it.
    assert "(0 of 8 clips stored, the rest as met)" in res.stdout
    results = json.loads((tmp_path / tiny_whisper_dir.name / "train_results.json").read_text())
    assert results["encoder_cache_clips"] == 8 and results["eval_encoder_cache_clips"] == 2, results


def test_accelerate_launch_two_processes(tiny_whisper_dir, corpus, tmp_path):
    # accelerate's --cpu starts several processes only through mpirun; --multi_gpu uses torch.distributed.run,
    # which on a machine without CUDA starts CPU processes that finetune.py joins with gloo. accelerate has no
    # --standalone flag; torchrun reads it from PET_STANDALONE (accelerate hands its own port to the static
    # rendezvous only, which standalone replaces).
    res = run_script([python(), "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes=2",
                      "--num_machines=1", "--mixed_precision=no", "--dynamo_backend=no",
                      "finetune.py", *finetune_args(tiny_whisper_dir, *corpus, tmp_path, max_steps=2,
                                                    metric="none")], env_extra={"PET_STANDALONE": "1"})
    _check_run(res, tmp_path / tiny_whisper_dir.name, "eval_loss")


def _first_step(run_dir) -> dict:
    """Loss and gradient norm of the first optimizer step, before any update changed the weights."""
    state = json.loads((run_dir / "checkpoint-final" / "trainer_state.json").read_text())
    return next(entry for entry in state["log_history"] if "grad_norm" in entry)


def _two_nodes(flags: list[str]) -> list[subprocess.CompletedProcess]:
    """finetune.py on two torchrun agents (--nnodes=2, one process each) that find each other through a c10d
    rendezvous at 127.0.0.1:<port>. A multi-node run needs a port both know in advance, so one is picked
    free here; another process taking it before the first agent binds it is the one race this leaves."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO))
    # Output to files, not pipes: an agent blocked on a full pipe would stall the other's rendezvous.
    logs = [(tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")) for _ in range(2)]
    agents = [subprocess.Popen([python(), "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
                                "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=two-nodes",
                                "finetune.py", *flags], cwd=REPO, env=env, stdout=out, stderr=err, text=True)
              for out, err in logs]
    results = []
    for agent, (out, err) in zip(agents, logs):
        agent.wait(timeout=300)
        out.seek(0), err.seek(0)
        results.append(subprocess.CompletedProcess(agent.args, agent.returncode, out.read(), err.read()))
        out.close(), err.close()
    return results


def test_two_processes_and_accumulation_give_the_single_process_loss_and_gradients(tiny_whisper_dir, tmp_path):
    """The same 4 clips as one global batch: 1 process x 4, 2 processes x 2, 1 process x 2 accumulated twice.
    A random model's loss per token is about ln(51865) = 10.86 whatever the clips; had the Trainer scaled the
    loss by the process count or skipped the division by the accumulation steps, it would read about 21.7
    and the gradient norm would double."""
    train, test = make_corpus(tmp_path / "corpus", n_train=4, n_test=2)
    common = dict(max_steps=1, eval_steps=1, save_steps=1, metric="none", lora_dropout=0.0, seed=3)
    runs = {
        "one process": ([python(), "finetune.py"], dict(per_device_train_batch_size=4)),
        "two processes": ([python(), "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "finetune.py"], dict(per_device_train_batch_size=2)),
        "accumulation": ([python(), "finetune.py"], dict(per_device_train_batch_size=2,
                                                         gradient_accumulation_steps=2)),
    }
    steps, adapters = {}, {}
    for name, (command, flags) in runs.items():
        out = tmp_path / name.replace(" ", "-")
        res = run_script([*command, *finetune_args(tiny_whisper_dir, train, test, out, **common, **flags)])
        assert res.returncode == 0, name + res.stdout[-2000:] + res.stderr[-3000:]
        steps[name] = _first_step(out / tiny_whisper_dir.name)
        adapters[name] = load_file(out / tiny_whisper_dir.name / "checkpoint-final" / "adapter_model.safetensors")
    # Two "machines": two torchrun agents of one process each, meeting through a c10d rendezvous on
    # 127.0.0.1 (docs/scale.md), writing to one shared output folder as nodes on a shared disk do.
    out = tmp_path / "two-nodes"
    flags = finetune_args(tiny_whisper_dir, train, test, out, **common, per_device_train_batch_size=2)
    for res in _two_nodes(flags):
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    steps["two nodes"] = _first_step(out / tiny_whisper_dir.name)
    adapters["two nodes"] = load_file(out / tiny_whisper_dir.name / "checkpoint-final" / "adapter_model.safetensors")
    reference = steps["one process"]
    assert 10.0 < reference["loss"] < 11.8, steps
    for name in ("two processes", "two nodes", "accumulation"):
        # Per-process and per-micro-batch means weight the clips' tokens slightly differently: well under 1 %.
        # Processes that do not average their gradients (what CPU runs did before finetune.py set use_cpu) log
        # rank 0's gradient norm over its own 2 clips: 6 % off here.
        assert steps[name]["loss"] == pytest.approx(reference["loss"], rel=0.01), steps
        assert steps[name]["grad_norm"] == pytest.approx(reference["grad_norm"], rel=0.02), steps
        # AdamW's first step moves every adapter weight by about +-lr along its gradient's sign: the same
        # gradient gives the same adapter. Unsynchronised processes got 8 % of the weights wrong here.
        same = sum(int((adapters[name][k] - adapters["one process"][k]).abs().lt(1e-3).sum())
                   for k in adapters[name])
        assert same >= 0.98 * sum(t.numel() for t in adapters[name].values()), (name, same)
