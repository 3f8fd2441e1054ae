"""finetune.py under torchrun and accelerate launch: two real processes on CPU (gloo) train one adapter.

No port is picked here and handed over (another process could take it in between): both launchers run
torchrun's standalone rendezvous, whose store binds a free port itself and serves the workers too.
"""
from __future__ import annotations

import json

import pytest
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
    state = json.loads((run_dir / "checkpoint-2" / "trainer_state.json").read_text())
    # 8 clips, 2 per process, 2 processes: 2 optimizer steps make one epoch only when both ranks take batches.
    assert state["global_step"] == 2 and state["epoch"] == pytest.approx(1.0)
    assert any(metric_key in e for e in state["log_history"])
    assert (run_dir / "checkpoint-final" / "adapter_model.safetensors").is_file()
    assert (run_dir / "checkpoint-best" / "adapter_model.safetensors").is_file()


def test_torchrun_two_processes(tiny_whisper_dir, corpus, tmp_path):
    res = run_script([python(), "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                      "finetune.py", *finetune_args(tiny_whisper_dir, *corpus, tmp_path, max_steps=2,
                                                    num_train_epochs=1)])
    _check_run(res, tmp_path / tiny_whisper_dir.name, "eval_cer")


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
