"""tools/accuracy_experiment.py's table: rows, changes against zero-shot, the no-speech column and the
README section it rewrites (the runs themselves take an hour; docs/accuracy.md is their output)."""
import subprocess
import sys

import pytest
from conftest import REPO

from utils.core.cli import parse_args

sys.path.insert(0, str(REPO / "tools"))
import accuracy_experiment  # noqa: E402

pytestmark = pytest.mark.slow


def _row(language, method, value, **extra):
    checks = {"no_speech_empty": 3, "no_speech_clips": 3, "timestamps_ok": 4, "timestamp_clips": 4,
              "no_speech_probabilities": [0.91, 0.94]}
    row = {"language": language, "method": method, "metric": "cer", "value": value,
           "counts": {"errors": int(value * 682), "reference_units": 682}, "checks": checks, "seconds": 60.0}
    row.update(extra)
    return row


def test_table_readme_section_and_plot(tmp_path):
    args = parse_args(accuracy_experiment.AccuracyArguments,
                      ["--experiments=zh-zero-shot,zh+-lora,en-lora", "--bf16=false",
                       f"--table={tmp_path / 'accuracy.md'}", f"--plot={tmp_path / 'curves.png'}",
                       f"--readme={tmp_path / 'README.md'}"])
    (tmp_path / "README.md").write_text("top\n<!-- begin: accuracy -->\nold\n<!-- end: accuracy -->\nend\n")
    train = {"seconds": 1170.0, "steps": 321, "epochs": 3, "peak_rss_gib": 4.7}
    results = {"zh-zero-shot": _row("zh", "zero-shot", 0.582),
               "zh+-lora": _row("zh+", "lora", 0.255, train=train, curve=[[5, 2.0], [10, 0.5]])}
    accuracy_experiment.write_outputs(args, results, "python tools/accuracy_experiment.py")
    table = (tmp_path / "accuracy.md").read_text()
    assert "| Mandarin (zh_test) | zero-shot | CER 0.582 | 396 / 682 | - | - | 3/3 (P 0.91-0.94) | 4/4 |" in table
    assert ("| Mandarin (zh_test), 3 readings per training sentence | lora | CER 0.255 (-56%) | 173 / 682 | "
            "19.5 min (321 steps, 3 ep) | 4.7 GiB | 3/3 (P 0.91-0.94) | 4/4 |") in table
    assert "**Partial table**: not finished yet: en-lora" in table and "training in fp32" in table
    readme = (tmp_path / "README.md").read_text()
    assert readme.startswith("top\n<!-- begin: accuracy -->\n```bash\n") and readme.endswith("end\n")
    assert "old" not in readme and "CER 0.255 (-56%)" in readme and "](curves.png)" in readme
    assert "\n\n\n" not in readme
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_experiments_and_missing_inputs_are_one_sentence(tmp_path):
    def run(*flags):
        return subprocess.run([sys.executable, "tools/accuracy_experiment.py", *flags], cwd=REPO,
                              capture_output=True, text=True, timeout=120)

    result = run("--experiments=zh-lora,fr-lora")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--experiments: 'fr-lora' is not <language>-<method>" in result.stderr
    missing = tmp_path / "missing.jsonl"
    result = run(f"--zh_test={missing}", f"--output_dir={tmp_path / 'out'}")
    assert result.returncode == 2 and result.stderr.strip() == f"error: --zh_test: {missing} not found"
    assert not (tmp_path / "out").exists()


def test_every_row_names_its_normaliser(tmp_path):
    args = parse_args(accuracy_experiment.AccuracyArguments,
                      ["--experiments=zh-zero-shot,en-zero-shot", "--bf16=false", f"--table={tmp_path / 'a.md'}",
                       f"--plot={tmp_path / 'c.png'}", "--readme="])
    results = {"zh-zero-shot": _row("zh", "zero-shot", 0.582),
               "en-zero-shot": _row("en", "zero-shot", 0.098, metric="wer", normalizer="whisper-english")}
    accuracy_experiment.write_outputs(args, results, "python tools/accuracy_experiment.py")
    table = (tmp_path / "a.md").read_text()
    assert "| timestamps when asked | normaliser | LID | other language | other language LID |\n" \
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n" in table
    # A row measured before the report named its normaliser was scored with punctuation-simplified.
    assert "| Mandarin (zh_test) | zero-shot | CER 0.582 | 396 / 682 | - | - | 3/3 (P 0.91-0.94) | 4/4 | " \
        "punctuation-simplified |" in table
    assert "| English (en_test) | zero-shot | WER 0.098 | 66 / 682 | - | - | 3/3 (P 0.91-0.94) | 4/4 | " \
        "whisper-english |" in table
    assert "Normaliser (`evaluation.py --normalizer=auto`): English with Whisper's English normaliser" in table


def test_retention_columns_and_option_rows(tmp_path):
    args = parse_args(accuracy_experiment.AccuracyArguments,
                      ["--experiments=zh-zero-shot,zh-lora,zh-lora+nolangloss+replay", "--bf16=false",
                       f"--table={tmp_path / 'a.md'}", f"--plot={tmp_path / 'c.png'}", "--readme="])
    assert [e.name for e in args.experiment_list] == ["zh-zero-shot", "zh-lora", "zh-lora+nolangloss+replay"]

    def lid(correct, clips, p):
        return {"accuracy": correct / clips, "correct": correct, "clips": clips, "mean_reference_probability": p}

    def kept(value, correct, p):
        return {"metric": "wer", "value": value, "lid": lid(correct, 16, p)}

    train = {"seconds": 240.0, "steps": 108, "epochs": 3, "peak_rss_gib": 2.7}
    results = {"zh-zero-shot": _row("zh", "zero-shot", 0.582, lid=lid(49, 49, 0.71), retention=kept(0.1, 16, 0.9)),
               "zh-lora": _row("zh", "lora", 0.348, train=train, lid=lid(49, 49, 0.99),
                               retention=kept(0.12, 9, 0.41)),
               "zh-lora+nolangloss+replay": _row("zh", "lora", 0.35, options=["nolangloss", "replay"], train=train,
                                                 lid=lid(49, 49, 0.8), retention=kept(0.1, 16, 0.88))}
    accuracy_experiment.write_outputs(args, results, "python tools/accuracy_experiment.py")
    table = (tmp_path / "a.md").read_text()
    assert "| Mandarin (zh_test) | zero-shot | CER 0.582 |" in table and \
        "| 49/49 (p 0.71) | WER 0.100 | 16/16 (p 0.90) |\n" in table
    assert "| lora | CER 0.348 (-40%) |" in table and "| 49/49 (p 0.99) | WER 0.120 (+20%) | 9/16 (p 0.41) |" in table
    assert "| lora+nolangloss+replay | CER 0.350 (-40%) |" in table and "| WER 0.100 (+0%) | 16/16 (p 0.88) |" in table
    with pytest.raises(SystemExit):
        parse_args(accuracy_experiment.AccuracyArguments, ["--experiments=zh-zero-shot+replay"])
