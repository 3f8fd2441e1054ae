"""The benchmark scripts' plumbing with tiny settings: real runs, real server, real tables."""
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow

CLIP = REPO / "dataset" / "audio" / "en_test_0001.flac"
SENTENCE = "The train to the airport leaves every twenty minutes."


def run(*args, timeout=600):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def table_rows(markdown: str) -> list[list[str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


def test_inference_benchmark_table_chart_and_goals(tmp_path, tiny_whisper_dir):
    reference = tmp_path / "reference.txt"
    reference.write_text(SENTENCE)
    prefix = tmp_path / "bench"
    # Without fallback: a random model fails every fallback check, and this tests plumbing, not decoding.
    configs = "transformers generate sdpa fp32,ours: ct2 int8 sequential greedy"
    # No --ct2_model_path: the CTranslate2 model is converted from the tiny one on the fly.
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- begin: speed-inference -->\nold\n<!-- end: speed-inference -->\nrest\n")
    result = run("tools/benchmark_inference.py", f"--audio_path={CLIP}", f"--reference_path={reference}",
                 f"--model_path={tiny_whisper_dir}", "--language=en", f"--configs={configs}",
                 "--repeats=2", "--threads=1", "--batch_size=2", f"--output_prefix={prefix}", f"--readme={readme}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "benchmarked 2 configurations x 2 rounds" in result.stdout

    rows = table_rows((tmp_path / "bench.md").read_text())
    assert [row[0] for row in rows] == configs.split(",")
    for name, seconds, spread, whole, rtf, peak_mb, wer, floor in rows:
        low, high = (float(v) for v in spread.split("-"))
        assert 0 < low <= float(seconds) <= high
        assert float(whole) > float(seconds)     # the whole process also starts Python and loads the model
        assert abs(float(rtf) - float(seconds) / 3.64) < 0.02   # the clip is 3.64 s long
        assert float(peak_mb) > 50 and wer.endswith("%")
        assert float(floor.split("x")[0]) > 1    # no row beats the arithmetic floor
    data = json.loads((tmp_path / "bench.json").read_text())
    assert f"{os.cpu_count()} cores" in data["header"] and "load average" in data["header"]
    assert all(len(runs) == 2 for runs in data["runs"].values())
    # The random tiny model's error rates decide which of the two goal lines applies; both name the peer.
    assert any((line.startswith("fastest peer at its best: transformers generate sdpa fp32") and "(goal 1.5x" in line)
               or line.startswith("none of our rows is within 0.5 points of the error rate of transformers generate "
                                  "sdpa fp32") for line in data["goals"])
    assert any(line.startswith("arithmetic floor of the fastest row") for line in data["goals"])
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The README's generated section holds the same table, the exact command and the chart; the rest stays.
    section = readme.read_text()
    assert section.startswith("# x\n<!-- begin: speed-inference -->\n```bash\npython ") and section.endswith("rest\n")
    assert "old" not in section and "--configs=" in section and "](bench.png)" in section
    assert table_rows(section) == rows


def test_inference_benchmark_reports_a_stopped_row_as_a_lower_bound(tmp_path):
    # A fifth of a second never covers a fresh process's start, its imports of faster-whisper and
    # CTranslate2 and the model load (each alone takes longer on any machine), so the run is stopped;
    # a loaded machine only makes that more certain.
    result = run("tools/benchmark_inference.py", f"--audio_path={CLIP}", "--language=en",
                 f"--ct2_model_path={REPO / 'models' / 'whisper-base-ct2'}",
                 "--configs=ours: ct2 int8 sequential greedy", "--repeats=1",
                 "--limit_s=0.2", "--floor=False", f"--output_prefix={tmp_path / 'stopped'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(stopped at --limit_s)" in result.stdout
    [row] = table_rows((tmp_path / "stopped.md").read_text())
    assert row[0] == "ours: ct2 int8 sequential greedy" and row[1] == "> 0.2" and row[5] == "n/a"


def test_inference_benchmark_rejects_unknown_row():
    result = run("tools/benchmark_inference.py", "--configs=ours: ct2 int9", "--repeats=1")
    assert result.returncode == 2
    assert "--configs: unknown ours: ct2 int9" in result.stderr and "Traceback" not in result.stderr


def test_inference_rows_name_registered_backends_and_their_options():
    sys.path.insert(0, str(REPO / "tools"))
    import benchmark_inference as bench

    from utils.inference.registry import BACKENDS

    engines = {engine for engine, _ in bench.CONFIGS.values()}
    assert engines == {"ct2", "transformers"} | set(bench.PEER_MODEL) | {bench.CLI}
    for name, (engine, settings) in bench.CONFIGS.items():
        if engine in BACKENDS:
            assert set(settings) <= set(BACKENDS[engine].options) | set(bench.DECODING_SETTINGS), name
        # Every row but the 'as shipped' ones runs at its best: our rows are named so, peers at threads = cores.
        assert bench.is_ours(name) == (engine in BACKENDS or engine == bench.CLI), name
    # infer.py --bf16 is the transformers backend's compute_type, as in the registry.
    assert bench.CONFIGS["ours: transformers bf16 batched no-fallback"][1]["compute_type"] == "bfloat16"
    assert set(bench.PEER_MODEL.values()) <= set(BACKENDS)
    assert [name for name in bench.CONFIGS if bench.AS_SHIPPED in name] == ["faster-whisper (as shipped)"]
    # Every batched row of faster-whisper or ours says whether it decodes timestamp tokens, and does what it says
    # (faster-whisper's batched pipeline leaves them out by default, our backend keeps them unless told).
    batched = [(name, engine, settings) for name, (engine, settings) in bench.CONFIGS.items()
               if engine in (bench.FW, "ct2") and settings.get("batch_size")]
    assert len(batched) == 8
    for name, engine, settings in batched:
        decodes = settings.get("timestamps", engine == "ct2")
        assert name.endswith(" timestamps" if decodes else " notimestamps"), name


def test_server_benchmark_measures_both_worker_counts(tmp_path):
    prefix = tmp_path / "server"
    result = run("tools/benchmark_server.py", f"--audio_path={CLIP}", "--workers=1,2", "--requests=4",
                 "--concurrency=2", "--repeats=1", f"--output_prefix={prefix}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = table_rows((tmp_path / "server.md").read_text())
    assert [row[0] for row in rows] == ["1", "2"]
    # workers x threads stays within the machine's threads (no oversubscription).
    assert all(int(row[0]) * int(row[1]) <= max(2, os.cpu_count()) for row in rows)
    data = json.loads((tmp_path / "server.json").read_text())
    for row in data["rows"]:
        assert row["requests_per_s"] > 0 and 0 < row["p50_s"] <= row["p95_s"]
        # The real whisper-base answered every request with the clip's words.
        assert "airport" in row["text"].lower()
    assert data["rows"][1]["threads_per_worker"] <= data["rows"][0]["threads_per_worker"]
    assert "the throughput of num_workers=1 (goal 1.5x)" in data["goals"][0]
    assert (tmp_path / "server.png").stat().st_size > 1000


def test_server_benchmark_rejects_bad_workers_and_a_missing_model(tmp_path):
    result = run("tools/benchmark_server.py", "--workers=0,2")
    assert result.returncode == 2 and "--workers: every value must be at least 1" in result.stderr
    result = run("tools/benchmark_server.py", f"--model_path={tmp_path}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"--model_path {tmp_path}: not a CTranslate2 model folder (no model.bin)" in result.stderr


def test_training_benchmark_interleaves_rounds_and_compares_loss_curves(tmp_path, tiny_whisper_dir):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- begin: speed-training -->\nold\n<!-- end: speed-training -->\n")
    table = tmp_path / "training.md"
    result = run("tools/benchmark_training.py", f"--base_model={tiny_whisper_dir}", "--num_clips=4", "--epochs=2",
                 "--batch_size=2", "--configs=frozen,frozen-cached-fp32", "--repeats=2", "--num_workers=0",
                 f"--output_dir={tmp_path / 'runs'}", f"--table={table}", f"--readme={readme}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(medians of 2)" in result.stdout

    rows = table_rows(table.read_text())
    assert [row[0] for row in rows] == ["frozen", "frozen-cached-fp32"]
    for name, rate, spread, seconds, encoder, peak, speedup in rows:
        low, high = (float(v) for v in spread.split("-"))
        assert 0 < low <= float(rate) <= high
        # samples/s = 4 clips x 2 epochs over the training time plus the encoder pass, in each round; the
        # table's time is the median round's, so it lies within the rounds' range of 8 / rate (the time is
        # printed in whole seconds, the rates to two decimals: hence the 0.6 s). Medians of rates and of
        # times come from different rounds, so 8 / median rate need not equal the median time.
        assert 8 / high - 0.6 <= float(seconds.removesuffix(" s")) <= 8 / low + 0.6
    assert rows[0][-1] == "1.00x vs frozen"
    ratio = float(rows[1][-1].split("x vs ")[0])
    # The tool divides unrounded rates; the table shows them to two decimals (and the ratio too).
    fast, slow = float(rows[1][1]), float(rows[0][1])
    assert (fast - 0.005) / (slow + 0.005) - 0.005 <= ratio <= (fast + 0.005) / (slow - 0.005) + 0.005
    # Same seed, same batches, same dropout masks: reading stored encoder outputs changes nothing but speed.
    assert ("Loss curves of `frozen` and `frozen-cached-fp32`: 4 logged steps, largest difference 0.00e+00"
            in table.read_text())
    data = json.loads((tmp_path / "runs" / "results.json").read_text())
    assert all(len(runs) == 2 for runs in data["runs"].values())
    assert [row["encoder_pass_seconds"] > 0 for row in data["rows"]] == [False, True]
    assert [r["losses"] for r in data["runs"]["frozen"]] == [r["losses"] for r in data["runs"]["frozen-cached-fp32"]]
    assert "median of 2 interleaved rounds" in table.read_text() and f"{os.cpu_count()} cores" in table.read_text()
    assert table_rows(readme.read_text()) == rows and "old" not in readme.read_text()


def test_training_benchmark_rejects_bad_flags_in_one_sentence():
    result = run("tools/benchmark_training.py", "--configs=frozen,frozen-fast")
    assert result.returncode == 2 and "--configs: unknown frozen-fast; choose from all-modules" in result.stderr
    result = run("tools/benchmark_training.py", "--train_data=nope.jsonl")
    assert result.returncode == 2 and result.stderr.strip() == "error: --train_data: nope.jsonl not found"
    result = run("tools/benchmark_training.py", "--epoch=2")
    assert result.returncode == 2 and "unknown flag --epoch; did you mean --epochs?" in result.stderr
