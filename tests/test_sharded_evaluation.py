"""evaluation.py under torchrun and accelerate launch: two CPU processes (gloo) decode their shares of the test
set and process 0 writes the very report one process writes; decoded clips are on disk as soon as decoded."""
from __future__ import annotations

import json

import pytest
from training_fixtures import make_corpus, python, run_script

import evaluation
from utils.inference.sharded_eval import part_folder, read_part_files

pytestmark = pytest.mark.slow


def _flags(model_dir, test, report):
    return [f"--model_path={model_dir}", f"--test_data={test}", "--batch_size=2", "--num_workers=0",
            "--max_new_tokens=3", "--local_files_only=True", f"--output_file={report}"]


@pytest.fixture(scope="module")
def single_process_report(tiny_whisper_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    _, test = make_corpus(root, n_train=1, n_test=4)
    report = root / "one.json"
    assert evaluation.main(_flags(tiny_whisper_dir, test, report)) == 0
    assert not (root / "one.json.parts").exists()
    return test, json.loads(report.read_text(encoding="utf-8"))


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_processes_write_the_single_process_report(launcher, tiny_whisper_dir, single_process_report,
                                                       tmp_path):
    test, expected = single_process_report
    report = tmp_path / "two.json"
    # Both launchers through torchrun's standalone rendezvous, which picks its own free port
    # (tests/test_distributed.py says why accelerate needs PET_STANDALONE).
    launch = ([python(), "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
              if launcher == "torchrun" else
              [python(), "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes=2", "--num_machines=1",
               "--mixed_precision=no", "--dynamo_backend=no"])
    res = run_script([*launch, "evaluation.py", *_flags(tiny_whisper_dir, test, report)],
                     env_extra={"PET_STANDALONE": "1"})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "process 1 of 2 decodes clips 1, 3, 5, ..." in res.stdout
    got = json.loads(report.read_text(encoding="utf-8"))
    got["test_data"], expected["test_data"] = str(test), str(test)
    assert got == expected        # same CER, counts and per-utterance rows, in manifest order
    assert res.stdout.count("CER: ") == 1, res.stdout
    assert not (tmp_path / "two.json.parts").exists()


def test_an_interrupted_run_keeps_the_clips_it_decoded(tiny_whisper_dir, single_process_report, tmp_path,
                                                       monkeypatch, capsys):
    test, expected = single_process_report
    report = tmp_path / "cut.json"
    real_decode, calls = evaluation.decode_batch, []

    def decode_then_fail(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(evaluation, "decode_batch", decode_then_fail)
    assert evaluation.main(_flags(tiny_whisper_dir, test, report)) != 0
    assert not report.exists()
    kept = read_part_files(part_folder(str(report)))
    # One batch of two decoded before the second failed: those two clips, as the full run decoded them.
    assert [(c.index, c.reference, c.hypothesis) for c in kept] == \
        [(u["index"], u["reference"], u["hypothesis"]) for u in expected["utterances"][:2]]
    assert "the 2 clips decoded before the interruption are in" in capsys.readouterr().out
