"""Faults a user meets: an output location that cannot be written, a disk that fills or a folder that
vanishes mid-run, a run killed while it saved, a clip whose body is damaged behind an intact header. Each
ends in one sentence (exit status 2) and loses nothing already complete."""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from training_fixtures import REPO, finetune_args, make_corpus

import finetune
from utils.core.errors import EXIT_INTERRUPTED, EXIT_USAGE, UsageError
from utils.core.files import atomic_dir, atomic_write, check_output_path
from utils.data.manifest import DataError

# (script, flags besides the output one, output flag, kind). Every model path is missing on purpose: the
# output check must come first, so the sentence is about the output, not the model.
SCRIPT_CASES = [
    ("infer.py", ["--audio_path={wav}", "--model_path={missing}", "--output_format=txt"], "--output_dir", "dir"),
    ("infer_ct2.py", ["--audio_path={wav}", "--model_path={missing}", "--output_format=txt"], "--output_dir",
     "dir"),
    ("evaluation.py", ["--test_data={manifest}", "--model_path={missing}"], "--output_file", "file"),
    ("convert-ggml.py", ["--model_dir={missing}"], "--output_path", "file"),
    ("merge_lora.py", ["--lora_model={missing}"], "--output_dir", "dir"),
    ("finetune.py", ["--train_data={manifest}", "--test_data={manifest}", "--base_model={missing}"],
     "--output_dir", "dir"),
    ("aishell.py", ["--filepath={missing}", "--target_dir={tmp}/audio"], "--annotation_text", "dir"),
    ("tools/create_audiofolder_data.py", ["--data_dir={tmp}"], "--output_dir", "dir"),
]

# Runs every script's main() in one process (imports paid once) against one output location and prints
# [script, exit status, stderr, seconds] per script as JSON.
_DRIVER = textwrap.dedent("""
    import contextlib, importlib.util, io, json, sys, time
    sys.path.insert(0, {repo!r})
    results = []
    for script, argv in json.loads(sys.argv[1]):
        spec = importlib.util.spec_from_file_location("script_" + str(len(results)), {repo!r} + "/" + script)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        err = io.StringIO()
        started = time.perf_counter()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                status = module.main(argv)
            except SystemExit as exc:
                status = exc.code
        results.append([script, status, err.getvalue(), time.perf_counter() - started])
    print(json.dumps(results))
""").format(repo=str(REPO))


def _can_mount() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "-rm", "true"], capture_output=True).returncode == 0


def _run_driver(calls: list, mount: str | None = None, options: str = "ro") -> list:
    """The driver's results; with `mount`, inside a private mount namespace where `mount` is a fresh tmpfs
    mounted with `options` (root ignores folder permissions, a read-only file system it cannot)."""
    command = [sys.executable, "-c", _DRIVER, json.dumps(calls)]
    if mount:
        script = f'mount -t tmpfs -o {options} none "$0" && exec "$@"'
        command = ["unshare", "-rm", "sh", "-c", script, mount, *command]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def small_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    train, _ = make_corpus(root, n_train=1, n_test=1)
    return {"wav": str(root / "clip0.wav"), "manifest": str(train), "missing": str(root / "no-such-model"),
            "tmp": str(root)}


def _calls(inputs: dict, out: str) -> list:
    calls = []
    for script, flags, out_flag, kind in SCRIPT_CASES:
        target = os.path.join(out, "report.json" if kind == "file" else "out")
        calls.append([script, [f.format(**inputs) for f in flags] + [f"{out_flag}={target}"]])
    return calls


def _assert_one_sentence(results: list, out: str, reason: str) -> None:
    for (script, status, stderr, seconds), (_, _, out_flag, kind) in zip(results, SCRIPT_CASES):
        lines = stderr.strip().splitlines()
        assert status == EXIT_USAGE and len(lines) == 1, (script, status, stderr)
        assert lines[0].startswith(f"error: {out_flag}: cannot ") and out in lines[0] and reason in lines[0], \
            (script, lines)
        # No time bound here (a loaded machine makes any bound flaky): the model paths do not exist, so the
        # output sentence above, not a model-load error, shows the check came first.


def test_every_script_refuses_an_output_path_under_a_regular_file_before_any_work(small_inputs, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    results = _run_driver(_calls(small_inputs, str(blocker)))
    _assert_one_sentence(results, str(blocker), f"{blocker} is a file, not a folder")


def test_every_script_refuses_a_read_only_output_folder_before_any_work(small_inputs, tmp_path):
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    if os.geteuid() != 0:
        read_only.chmod(0o555)
        results = _run_driver(_calls(small_inputs, str(read_only)))
    else:
        if not _can_mount():
            pytest.skip("running as root without user namespaces: no read-only location can be made")
        results = _run_driver(_calls(small_inputs, str(read_only)), mount=str(read_only))
    _assert_one_sentence(results, str(read_only), "is read-only or not yours to write")


def test_check_output_path_accepts_what_can_be_created_and_refuses_a_folder_for_a_file(tmp_path):
    assert check_output_path(tmp_path / "new" / "deeper", "--output_dir", kind="dir") == str(
        tmp_path / "new" / "deeper")
    assert not (tmp_path / "new").exists()          # it checks, it creates nothing
    with pytest.raises(UsageError, match=r"^--output_file: .* is a folder; name a file$"):
        check_output_path(tmp_path, "--output_file")


_FULL_DISK = textwrap.dedent("""
    import json, os, sys, torch
    sys.path.insert(0, {repo!r})
    from utils.core.files import atomic_dir, atomic_write
    root = sys.argv[1]
    with open(os.path.join(root, "filler"), "wb") as handle:
        handle.write(b"x" * (1024 * 1024 - 64 * 1024))
    out = []
    for what, write in (("torch.save", lambda d: torch.save(torch.zeros(100000), os.path.join(d, "a.pt"))),
                        ("safetensors", lambda d: __import__("safetensors.torch").torch.save_file(
                            {{"a": torch.zeros(100000)}}, os.path.join(d, "a.safetensors")))):
        try:
            with atomic_dir(os.path.join(root, "model")) as tmp:
                write(tmp)
            out.append([what, None, None])
        except OSError as exc:
            out.append([what, exc.filename, exc.strerror])
    try:
        with atomic_write(os.path.join(root, "report.json")) as handle:
            handle.write("x" * 400000)
    except OSError as exc:
        out.append(["json", exc.filename, exc.strerror])
    out.append(["left", sorted(os.listdir(root)), None])
    print(json.dumps(out))
""").format(repo=str(REPO))


def test_a_full_disk_names_the_output_not_the_library_message(tmp_path):
    """torch.save reports a full disk as 'unexpected pos ...' and safetensors as its own error type;
    both must become 'No space left on device' about the folder the user asked for (a real 1 MiB tmpfs)."""
    if not _can_mount():
        pytest.skip("no user namespaces here to mount a tiny tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    script = 'mount -t tmpfs -o size=1m none "$0" && exec "$@"'
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script, str(disk), sys.executable, "-c", _FULL_DISK,
                           str(disk)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    results = {row[0]: row[1:] for row in json.loads(done.stdout.strip().splitlines()[-1])}
    assert results["torch.save"] == [str(disk / "model"), "No space left on device"]
    assert results["safetensors"] == [str(disk / "model"), "No space left on device"]
    assert results["json"] == [str(disk / "report.json"), "No space left on device"]
    assert results["left"] == [["filler"], None]       # no temporary file or folder stays behind


def test_a_folder_removed_or_refused_while_written_names_the_file(tmp_path):
    target = tmp_path / "run" / "train_results.json"
    target.parent.mkdir()
    with pytest.raises(OSError) as caught:
        with atomic_write(target) as handle:
            shutil.rmtree(target.parent)
            handle.write("{}")
    assert caught.value.filename == str(target) and "removed" in caught.value.strerror
    with pytest.raises(OSError) as caught:
        with atomic_dir(tmp_path / "model") as tmp:
            raise PermissionError(errno.EACCES, "Permission denied", os.path.join(tmp, "weights.bin"))
    assert (caught.value.filename, caught.value.strerror) == (str(tmp_path / "model"), "Permission denied")
    assert sorted(os.listdir(tmp_path)) == []


# --- training ------------------------------------------------------------------------------------


def _fail_at_step_2_save(monkeypatch, exception: BaseException) -> None:
    """The second checkpoint's optimizer state cannot be written (its adapter already was): what a disk that
    fills, or a kill, during a save does."""
    import torch

    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if "checkpoint-2" in str(f):
            raise exception
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


def test_a_save_that_fails_leaves_the_last_checkpoint_and_the_next_run_clears_the_leftovers(
        tiny_whisper_dir, tmp_path, monkeypatch, capsys):
    train, test = make_corpus(tmp_path / "corpus", n_train=2, n_test=1)
    out = tmp_path / "out"
    run_dir = out / tiny_whisper_dir.name
    flags = finetune_args(tiny_whisper_dir, train, test, out, max_steps=2, eval_steps=1, save_steps=1,
                          metric="none")

    # 1. Killed (here: Ctrl-C) while checkpoint-2 is written: checkpoint-1 complete, no checkpoint-2 at all.
    _fail_at_step_2_save(monkeypatch, KeyboardInterrupt())
    assert finetune.main(flags) == EXIT_INTERRUPTED
    assert (run_dir / "checkpoint-1" / "trainer_state.json").is_file()
    assert not (run_dir / "checkpoint-2").exists()
    leftovers = {p.name for p in run_dir.iterdir() if p.name.startswith(".")}
    assert leftovers == {".checkpoint-saving"}, leftovers
    # What older versions and atomic_dir leave when killed: a partial step folder, a hidden copy.
    (run_dir / "checkpoint-7").mkdir()
    (run_dir / "checkpoint-7" / "adapter_config.json").write_text("{}")
    (run_dir / ".checkpoint-best.x1y2.part").mkdir()
    capsys.readouterr()

    # 2. The next run removes all of that (and says so); its disk fills at checkpoint-2: one sentence.
    _fail_at_step_2_save(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    assert finetune.main(flags) == EXIT_USAGE
    captured = capsys.readouterr()
    assert (f"removed what an interrupted run left in {run_dir}: .checkpoint-best.x1y2.part, .checkpoint-saving, "
            f"checkpoint-7") in captured.out
    # (progress bars share the line: they end in a carriage return, not a newline)
    error = "error: " + captured.err.rsplit("error: ", 1)[-1].strip()
    assert error == (f"error: could not write {run_dir / 'checkpoint-2'}: No space left on device; the last "
                     f"complete checkpoint is {run_dir / 'checkpoint-1'} (--resume_from_checkpoint="
                     f"{run_dir / 'checkpoint-1'} continues from it)"), captured.err[-2000:]
    assert "Traceback" not in captured.err
    names = sorted(p.name for p in run_dir.iterdir() if p.name != "runs")
    assert names == ["checkpoint-1", "checkpoint-best"], names
    state = json.loads((run_dir / "checkpoint-1" / "trainer_state.json").read_text())
    assert state["global_step"] == 1 and state["best_model_checkpoint"] == str(run_dir / "checkpoint-1")
    assert (run_dir / "checkpoint-1" / "adapter_model.safetensors").stat().st_size > 0


# --- damaged audio -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def damaged_manifest(tmp_path_factory):
    """A manifest of one good clip and, on line 2, a FLAC whose header says 4.48 s but whose body is
    garbage after its first eighth (decoders give well under a second of it)."""
    import soundfile

    from utils.core.audio import SAMPLE_RATE, audio_duration

    root = tmp_path_factory.mktemp("damaged")
    train, _ = make_corpus(root, n_train=1, n_test=1)
    t = np.arange(int(4.48 * SAMPLE_RATE)) / SAMPLE_RATE
    soundfile.write(root / "whole.flac", (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), SAMPLE_RATE)
    data = (root / "whole.flac").read_bytes()
    keep = len(data) // 8
    garbage = np.random.default_rng(1).integers(0, 256, len(data) - keep, dtype=np.uint8).tobytes()
    damaged = root / "damaged.flac"
    damaged.write_bytes(data[:keep] + garbage)
    assert audio_duration(damaged) == pytest.approx(4.48)
    line = {"audio": {"path": str(damaged)}, "sentence": "今天天气很好", "duration": 4.48}
    manifest = root / "with_damaged.jsonl"
    manifest.write_text(train.read_text() + json.dumps(line, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest, damaged


def test_a_damaged_clip_stops_with_its_line_or_is_skipped_and_counted(tiny_whisper_dir, damaged_manifest):
    from transformers import WhisperProcessor

    from utils.data.collator import SKIPPED_KEY, SpeechSeq2SeqCollator
    from utils.data.dataset import SpeechDataset

    manifest, damaged = damaged_manifest
    processor = WhisperProcessor.from_pretrained(tiny_whisper_dir)
    strict = SpeechDataset(manifest, processor, language="Chinese")
    assert len(strict) == 2 and strict[0]["labels"]
    with pytest.raises(DataError, match=rf"^{manifest}:2: {damaged} decodes to 0\.\d\d s of audio but its header "
                                        rf"says 4\.48 s: the file is damaged or truncated"):
        strict[1]

    lenient = SpeechDataset(manifest, processor, language="Chinese", skip_bad=True)
    collate = SpeechSeq2SeqCollator(processor, 0)
    batch = collate([lenient[0], lenient[1]])
    assert batch["input_features"].shape[0] == 1 and batch["labels"].shape[0] == 1
    assert len(batch[SKIPPED_KEY]) == 1 and batch[SKIPPED_KEY][0].startswith(f"{manifest}:2: ")
    with pytest.raises(DataError, match=rf"^every clip of a batch was unusable, e.g. {manifest}:2: "):
        collate([lenient[1]])


@pytest.mark.parametrize("cache", [{}, {"freeze_encoder": True, "cache_encoder_outputs": True}],
                         ids=["plain", "encoder-cache"])
def test_training_with_skip_bad_skips_the_damaged_clip_and_counts_it(tiny_whisper_dir, damaged_manifest, tmp_path,
                                                                    capsys, cache):
    manifest, _ = damaged_manifest
    flags = finetune_args(tiny_whisper_dir, manifest, manifest, tmp_path, max_steps=1, eval_steps=1, save_steps=1,
                          metric="none", skip_bad=True, **cache)
    assert finetune.main(flags) == 0
    out = capsys.readouterr().out
    assert f"; 1 damaged clip(s) skipped while training (--skip_bad, first: {manifest}:2: " in out, out[-2000:]
    # With the cache on, the damaged clip is dropped before the step that would have stored its row.
    assert ("encoder cache (training): " in out) == bool(cache) and "encoder cache off" not in out, out[-2000:]


# (script, flags) given a model of the wrong kind, and the start of what the sentence must say.
WRONG_KIND_CASES = [
    ("infer.py", ["--audio_path={wav}", "--model_path={ct2}", "--output_dir={tmp}/o"],
     "{ct2}: is a CTranslate2 model folder, not a transformers model folder"),
    ("infer_ct2.py", ["--audio_path={wav}", "--model_path={hf}", "--output_dir={tmp}/o"],
     "{hf}: this is a transformers model, not a CTranslate2 one"),
    ("evaluation.py", ["--test_data={manifest}", "--model_path={ggml}", "--output_file={tmp}/r.json"],
     "{ggml}: is a whisper.cpp GGML file, not a transformers model folder"),
    ("finetune.py", ["--train_data={manifest}", "--test_data={manifest}", "--base_model={adapter}",
                     "--output_dir={tmp}/f"], "{adapter}: is a LoRA adapter folder"),
    ("merge_lora.py", ["--lora_model={hf}", "--output_dir={tmp}/m"], "{hf}: not a LoRA adapter folder"),
    ("convert-ggml.py", ["--model_dir={ggml}", "--output_path={tmp}/g.bin"], "{ggml}: is already a GGML file"),
    ("tools/hf_to_ct2.py", ["--model_dir={ct2}", "--output_dir={tmp}/c"],
     "{ct2}: is a CTranslate2 model folder, not a transformers model folder"),
    ("tools/ct2_to_hf.py", ["--model_dir={hf}", "--output_dir={tmp}/h"], "{hf}: has no model.bin"),
    ("infer_server.py", ["--port=0", "--model_path={adapter}"], "{adapter}: is a LoRA adapter folder"),
    ("infer_server.py", ["--port=0", "--backend=ggml", "--model_path={ct2}"],
     "{ct2}: is a folder; the ggml backend reads one GGML model file"),
    ("infer_gui.py", ["--model_path={adapter}"], "{adapter}: is a LoRA adapter folder"),
    ("infer_gui.py", ["--backend=transformers", "--model_path={ct2}"],
     "{ct2}: is a CTranslate2 model folder, not a transformers model folder"),
    ("infer_gui.py", ["--backend=ggml", "--model_path={hf}"], "{hf}: is a transformers model folder, not a "
                                                              "whisper.cpp GGML file"),
]


def test_every_script_given_the_wrong_kind_of_model_says_so_in_one_sentence(small_inputs, tmp_path, monkeypatch):
    """A CTranslate2 folder where a transformers one is read, an adapter where a full model is, a GGML file
    where a folder is ...: exit status 2 and one sentence naming the path and its kind, before any work
    (infer_gui.py before its window opens: no display is needed to see the refusal)."""
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA", "base_model_name_or_path": "x"}')
    ggml = tmp_path / "model.bin"
    ggml.write_bytes((0x67676D6C).to_bytes(4, "little") + bytes(64))
    paths = {**small_inputs, "tmp": str(tmp_path), "adapter": str(adapter), "ggml": str(ggml),
             "ct2": str(REPO / "models" / "whisper-tiny.en-ct2"), "hf": str(REPO / "models" / "whisper-tiny.en")}
    calls = [[script, [flag.format(**paths) for flag in flags]] for script, flags, _ in WRONG_KIND_CASES]
    monkeypatch.delenv("DISPLAY", raising=False)   # the driver inherits it: no window may be needed
    for (script, status, stderr, _), (_, flags, expected) in zip(_run_driver(calls), WRONG_KIND_CASES):
        lines = stderr.strip().splitlines()
        assert status == EXIT_USAGE and len(lines) == 1, (script, flags, status, stderr[-2000:])
        assert lines[0].startswith("error: " + expected.format(**paths)), (script, lines[0])
