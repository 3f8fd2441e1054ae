"""Frozen-encoder training with stored encoder outputs: same losses as without, the encoder runs once per
clip instead of once per step, and the cases where stored outputs would be wrong are refused."""
from __future__ import annotations

import json

import numpy as np
import pytest
from training_fixtures import finetune_args, make_corpus

import finetune


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"), n_train=6, n_test=2)


def _three_epochs(model_dir, corpus, out, **overrides):
    # 6 clips, batch 2: 3 steps per epoch, 9 in all; eval_steps beyond the run so only training is timed.
    # float32 storage unless a test says otherwise: these tests compare the cache's mechanism with recomputing
    # the encoder, exactly; the float16 default is checked against it below.
    flags = dict(max_steps=-1, num_train_epochs=3, eval_steps=100, save_steps=100, freeze_encoder=True,
                 lora_dropout=0.1)
    if overrides.get("cache_encoder_outputs") is not False:
        flags["encoder_cache_dtype"] = "float32"
    return finetune_args(model_dir, *corpus, out, **{**flags, **overrides})


def _losses(out):
    state = json.loads(next(out.glob("*/checkpoint-final/trainer_state.json")).read_text())
    return [row["loss"] for row in state["log_history"] if "loss" in row]


@pytest.fixture(scope="module")
def encoder_calls():
    """Clips passed through WhisperEncoder.forward while a run is in this process: in training steps
    (gradients on) and elsewhere (the cache's pass, evaluation)."""
    import torch
    from transformers.models.whisper import modeling_whisper

    original = modeling_whisper.WhisperEncoder.forward
    counts = {"train": 0, "other": 0}

    def counted(self, input_features, *args, **kwargs):
        counts["train" if torch.is_grad_enabled() else "other"] += len(input_features)
        return original(self, input_features, *args, **kwargs)

    modeling_whisper.WhisperEncoder.forward = counted
    yield counts
    modeling_whisper.WhisperEncoder.forward = original


def _run(encoder_calls, argv):
    encoder_calls.update(train=0, other=0)
    assert finetune.main(argv) == 0
    return dict(encoder_calls)


def test_cached_training_has_the_same_losses_and_runs_the_encoder_once_per_clip(
        tiny_whisper_dir, corpus, tmp_path, encoder_calls, capsys):
    plain = _run(encoder_calls, _three_epochs(tiny_whisper_dir, corpus, tmp_path / "plain",
                                              cache_encoder_outputs=False))
    cached = _run(encoder_calls, _three_epochs(tiny_whisper_dir, corpus, tmp_path / "cached",
                                               encoder_cache_dir=tmp_path / "cache"))
    out = capsys.readouterr().out
    assert "training and evaluation run the decoder only on stored clips" in out
    assert "(0 of 6 clips stored, the rest as met)" in out and "(0 of 2 clips stored, the rest as met)" in out

    # Without the cache the encoder sees every clip in every epoch (with gradients on); with it, once, without
    # gradients, inside the first epoch's steps: nothing runs before step 1.
    assert plain["train"] == 18 and cached["train"] == 0, (plain, cached)
    # Both evaluate the 2 test clips once, at the end. Without the cache that runs the encoder twice on them
    # (generate, then the loss); with it the first evaluation step that meets them stores them, once.
    assert plain["other"] == 2 * 2 and cached["other"] == 6 + 2, (plain, cached)
    reference, losses = _losses(tmp_path / "plain"), _losses(tmp_path / "cached")
    assert len(reference) == len(losses) == 9
    assert reference[0] > reference[-1]        # it learns, so equal curves are a real comparison
    assert losses == pytest.approx(reference, rel=1e-4, abs=1e-5)
    results = json.loads(next((tmp_path / "cached").glob("*/train_results.json")).read_text())
    assert results["encoder_cache"] is True and results["encoder_cache_clips"] == 6
    assert results["eval_encoder_cache_clips"] == 2
    assert results["train_clips"] == 6 and results["global_step"] == 9

    # A second run on the same data and model reuses the stored outputs: the encoder does not run at all.
    again = _run(encoder_calls, _three_epochs(tiny_whisper_dir, corpus, tmp_path / "again",
                                              encoder_cache_dir=tmp_path / "cache"))
    assert again == {"train": 0, "other": 0} and capsys.readouterr().out.count("(complete)") == 2
    assert _losses(tmp_path / "again") == pytest.approx(reference, rel=1e-4, abs=1e-5)
    assert len(list((tmp_path / "cache").iterdir())) == 2     # training and test clips; no temporary folders

    # float16 storage (the default) halves the disk space at the price of rounding: close, not equal.
    half = [a for a in _three_epochs(tiny_whisper_dir, corpus, tmp_path / "half") if "encoder_cache_dtype" not in a]
    _run(encoder_calls, half)
    assert _losses(tmp_path / "half") == pytest.approx(reference, rel=2e-3)
    stored = [np.load(path, mmap_mode="r")
              for path in (tmp_path / "half" / "encoder_cache").glob("*/hidden_states.npy")]
    assert {array.dtype for array in stored} == {np.dtype(np.float16)}
    assert sorted(array.shape for array in stored) == [(2, 1500, 64), (6, 1500, 64)]   # test and training clips


def _evaluations(out):
    state = json.loads(next(out.glob("*/checkpoint-final/trainer_state.json")).read_text())
    return [(row["step"], row["eval_loss"], row["eval_cer"]) for row in state["log_history"] if "eval_loss" in row]


def test_every_evaluation_reads_the_stored_outputs_and_scores_the_same(tiny_whisper_dir, corpus, tmp_path,
                                                                         encoder_calls):
    # An evaluation (decoding with generate and scoring CER) after every epoch.
    every_epoch = dict(eval_steps=3, save_steps=3, generation_max_length=8)
    plain = _run(encoder_calls, _three_epochs(tiny_whisper_dir, corpus, tmp_path / "plain",
                                              cache_encoder_outputs=False, **every_epoch))
    cached = _run(encoder_calls, _three_epochs(tiny_whisper_dir, corpus, tmp_path / "cached",
                                               encoder_cache_dir=tmp_path / "cache", **every_epoch))
    # Without the cache each of the 3 evaluations runs the encoder twice on the 2 test clips (generate, then
    # the loss); with it, only the first epoch and the first evaluation do, once per clip (6 + 2).
    assert plain == {"train": 18, "other": 3 * 2 * 2} and cached == {"train": 0, "other": 6 + 2}, (plain, cached)
    reference, evaluations = _evaluations(tmp_path / "plain"), _evaluations(tmp_path / "cached")
    assert [step for step, _, _ in reference] == [3, 6, 9]
    assert len({loss for _, loss, _ in reference}) == 3      # the model changed between them
    for (step, loss, cer), (cached_step, cached_loss, cached_cer) in zip(reference, evaluations, strict=True):
        assert (cached_step, cached_cer) == (step, cer) and cached_loss == pytest.approx(loss, rel=1e-4)
    results = json.loads(next((tmp_path / "cached").glob("*/train_results.json")).read_text())
    assert results["eval_encoder_cache_clips"] == 2


def test_bf16_training_caches_outputs_computed_in_bf16(tiny_whisper_dir, corpus, tmp_path, encoder_calls):
    from utils.core.devices import cpu_supports_bf16

    if not cpu_supports_bf16():
        pytest.skip("this CPU has no bfloat16 instructions; --bf16 is refused here (tests/test_finetune.py)")
    _run(encoder_calls, _three_epochs(tiny_whisper_dir, corpus, tmp_path / "fp32",
                                      encoder_cache_dir=tmp_path / "cache"))
    plain = _run(encoder_calls, _three_epochs(tiny_whisper_dir, corpus, tmp_path / "plain", bf16=True,
                                              cache_encoder_outputs=False))
    cached = _run(encoder_calls, _three_epochs(tiny_whisper_dir, corpus, tmp_path / "cached", bf16=True,
                                               encoder_cache_dir=tmp_path / "cache"))
    assert plain["train"] == 18 and cached["train"] == 0, (plain, cached)
    # Stored apart from the fp32 outputs (different keys, for training and test clips), and the same curve
    # as bf16 without the cache.
    assert len(list((tmp_path / "cache").iterdir())) == 4
    reference, losses = _losses(tmp_path / "plain"), _losses(tmp_path / "cached")
    assert len(losses) == 9 and reference[0] > reference[-1]
    assert losses == pytest.approx(reference, rel=2e-2)
    assert losses != pytest.approx(_losses(tmp_path / "fp32"), rel=1e-6)   # it really ran in bf16


def _error(capsys, argv):
    """Exit status and last stderr line; a flag mistake ends in parse_args' SystemExit(2)."""
    try:
        code = finetune.main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err.strip().splitlines()[-1]


def test_cache_is_refused_where_stored_outputs_would_be_wrong(tiny_whisper_dir, corpus, tmp_path, capsys):
    from conftest import REPO

    augment = REPO / "configs" / "augmentation.json"
    code, err = _error(capsys, _three_epochs(tiny_whisper_dir, corpus, tmp_path, cache_encoder_outputs=True,
                                             augment_config_path=augment))
    assert code == 2 and "augmentation changes the audio every epoch" in err, err

    argv = [a for a in _three_epochs(tiny_whisper_dir, corpus, tmp_path, cache_encoder_outputs=True)
            if not a.startswith("--freeze_encoder")]
    code, err = _error(capsys, argv)
    assert code == 2 and "needs --freeze_encoder=True" in err, err

    code, err = _error(capsys, _three_epochs(tiny_whisper_dir, corpus, tmp_path, encoder_cache_dtype="int8"))
    assert code == 2 and "--encoder_cache_dtype" in err and "'int8'" in err and "float16" in err, err

    code, err = _error(capsys, _three_epochs(tiny_whisper_dir, corpus, tmp_path, cache_encoder_outputs=False,
                                             encoder_cache_dtype="float32"))
    assert code == 2 and "do nothing with --cache_encoder_outputs=False" in err, err


def test_random_encoder_turns_the_automatic_cache_off(tiny_whisper_dir, corpus, tmp_path, capsys, encoder_calls):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    noisy = tmp_path / "noisy-model"
    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir)
    model.config.apply_spec_augment = True
    model.save_pretrained(noisy)
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json",
                 "generation_config.json"):
        if (tiny_whisper_dir / name).exists():
            (noisy / name).write_bytes((tiny_whisper_dir / name).read_bytes())
    assert WhisperConfig.from_pretrained(noisy).apply_spec_augment

    code, err = _error(capsys, _three_epochs(noisy, corpus, tmp_path / "a", cache_encoder_outputs=True))
    assert code == 2 and "apply_spec_augment=True" in err, err
    calls = _run(encoder_calls, _three_epochs(noisy, corpus, tmp_path / "b", num_train_epochs=1))
    assert "encoder cache off: the model config has apply_spec_augment=True" in capsys.readouterr().out
    assert calls["train"] == 6          # one epoch, the encoder ran on every batch


class _Labels:
    """The two things CachedEncoderDataset asks of a SpeechDataset."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def labels(self, index):
        return [index]

    def __getitem__(self, index):
        return {"input_features": np.full((2, 3), index, dtype=np.float32), "labels": [index]}


def _resident_file_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("RssFile:"))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_rows_are_stored_and_read_whole_without_mapping_the_file(tmp_path, dtype):
    import pickle
    import sys

    from utils.training.encoder_cache import HIDDEN_FILE, CachedEncoderDataset, EncoderCacheError, EncoderOutputStore

    rows = np.random.default_rng(0).standard_normal((40, 1500, 512)).astype(np.float32)   # 123 MB
    store = EncoderOutputStore.open_or_create(str(tmp_path), "key", 40, 1500, 512, dtype)
    dataset = CachedEncoderDataset(_Labels(40), store)
    # Nothing stored yet: every item is the clip's own, marked for the step to encode and store.
    assert dataset[7] == {"input_features": pytest.approx(np.full((2, 3), 7.0)), "labels": [7], "cache_row": 7}
    written = [store.write(index, rows[index]) for index in range(40)]
    assert written[3].dtype == np.dtype(dtype) and store.filled_count() == 40

    before = _resident_file_kib() if sys.platform.startswith("linux") else 0
    for index in (39, 0, 17, *range(40)):
        item = dataset[index]
        assert item["labels"] == [index] and "cache_row" not in item
        assert item["encoder_hidden_states"].dtype == np.float32
        np.testing.assert_array_equal(item["encoder_hidden_states"], rows[index].astype(dtype).astype(np.float32))
    if sys.platform.startswith("linux"):
        # Every row was read, and none of the file stayed mapped into this process.
        assert _resident_file_kib() - before < rows.nbytes / 1024 / 10
    # A DataLoader worker gets the dataset pickled and opens the files itself; a second opener of the same key
    # (another process, another machine on the disk) finds the rows stored.
    copy = pickle.loads(pickle.dumps(dataset))
    np.testing.assert_array_equal(copy[5]["encoder_hidden_states"], written[5].astype(np.float32))
    again = EncoderOutputStore.open_or_create(str(tmp_path), "key", 40, 1500, 512, dtype)
    assert again.filled_count() == 40 and sorted(p.name for p in tmp_path.iterdir()) == ["key"]
    with pytest.raises(EncoderCacheError, match="has 40 rows of \\(1500, 512\\) for 41 clips"):
        EncoderOutputStore.open_or_create(str(tmp_path), "key", 41, 1500, 512, dtype)

    with open(tmp_path / "key" / HIDDEN_FILE, "r+b") as handle:     # a file cut short by a full disk, say
        handle.truncate(handle.seek(0, 2) - 1000)
    with pytest.raises(EncoderCacheError, match="ends early; delete its folder"):
        CachedEncoderDataset(_Labels(40), EncoderOutputStore(str(tmp_path / "key")))[39]


def test_an_interrupted_run_keeps_the_outputs_it_stored(tiny_whisper_dir, corpus, tmp_path, encoder_calls, capsys):
    # One step of batch 2 stores 2 of the 6 training clips (and, in the final evaluation, the 2 test clips).
    first = _run(encoder_calls, _three_epochs(tiny_whisper_dir, corpus, tmp_path / "a", max_steps=1,
                                              encoder_cache_dir=tmp_path / "cache"))
    assert first == {"train": 0, "other": 2 + 2}, first
    capsys.readouterr()
    rest = _run(encoder_calls, _three_epochs(tiny_whisper_dir, corpus, tmp_path / "b",
                                             encoder_cache_dir=tmp_path / "cache"))
    assert "(2 of 6 clips stored, the rest as met)" in capsys.readouterr().out
    assert rest == {"train": 0, "other": 4}, rest        # only the clips the first run never met


def test_a_cache_too_large_for_the_limit_stays_off_unless_asked(tiny_whisper_dir, corpus, tmp_path, capsys,
                                                                   encoder_calls):
    # 8 clips of 1500 x 64 float32 rows: 3 MB.
    calls = _run(encoder_calls, _three_epochs(tiny_whisper_dir, corpus, tmp_path / "a", num_train_epochs=1,
                                              encoder_cache_max_gb=0.001))
    assert "encoder cache off: 8 clips would need 2.9 MiB, more than --encoder_cache_max_gb=0.001" in \
        capsys.readouterr().out
    assert calls["train"] == 6
    calls = _run(encoder_calls, _three_epochs(tiny_whisper_dir, corpus, tmp_path / "b", num_train_epochs=1,
                                              encoder_cache_max_gb=0.001, cache_encoder_outputs=True))
    assert calls["train"] == 0
