"""Speed of our transcription paths against every peer at its best, on one file, in one interleaved run.

    python tools/benchmark_inference.py --audio_path=dataset/en_long.flac --reference_path=dataset/en_long.txt \\
        --language=en --ct2_model_path=models/whisper-base-ct2 --repeats=3 --output_prefix=docs/benchmark_inference

Rows of three kinds, every one in a fresh process, rounds interleaved (every row once per round,
so a change in this shared machine's load hits all rows alike), medians of `--repeats` rounds:

- peers at their best documented CPU configuration, called directly through the library:
  faster-whisper int8 with cpu_threads = cores (sequential and BatchedInferencePipeline, beam 5
  and greedy), whisper.cpp (pywhispercpp) f16/q8_0/q5_0 at threads = cores, transformers'
  long-form `generate` and its chunked batched `pipeline` with sdpa attention in float32 and bfloat16;
- peers "as shipped": the library's defaults (faster-whisper's `WhisperModel(path).transcribe(audio)`),
  labelled so;
- ours: the registry's backends as infer.py / infer_ct2.py call them, and `infer_ct2.py` itself as a
  user runs it.

Columns: transcription seconds in the process (model load excluded), whole-process seconds (Python
start, imports, model load and transcription: what a user waits for), real-time factor, peak memory,
the error rate (English: Whisper's English normaliser) and how many times the arithmetic floor
(utils/bench/floor.py) the row takes.
"""
from __future__ import annotations

import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils import REPO_ROOT  # noqa: E402
from utils.bench.report import (  # noqa: E402
    command_line,
    machine_description,
    pyplot,
    save_figure,
    write_readme_section,
)
from utils.core.cli import guarded, parse_args, print_config  # noqa: E402
from utils.core.errors import UsageError, UserError  # noqa: E402
from utils.core.files import write_json_atomic, write_text_atomic  # noqa: E402
from utils.inference.registry import BACKEND_NAMES, BACKENDS, default_model  # noqa: E402

# Peers: the libraries called directly, each reading the model of the backend named here.
FW, WCPP, HF_GENERATE, HF_PIPELINE, CLI = "faster-whisper", "whisper.cpp", "hf-generate", "hf-pipeline", "cli"
PEER_MODEL = {FW: "ct2", WCPP: "ggml", HF_GENERATE: "transformers", HF_PIPELINE: "transformers"}
# Settings of one of our rows that are decoding options (TranscribeOptions), not options of the backend.
DECODING_SETTINGS = ("beam_size", "vad_filter", "fallback", "timestamps")
BATCH = "batch"        # a batch_size setting of BATCH takes --batch_size
OURS = "ours: "        # the prefix of our rows' names
AS_SHIPPED = "(as shipped)"

# name -> (engine, settings). Peer engines are the names above; ours are backends of
# utils/inference/registry.py, used exactly as infer.py / infer_ct2.py use them; CLI runs a script.
CONFIGS = {
    "faster-whisper int8 beam5": (FW, {"compute_type": "int8", "beam_size": 5}),
    "faster-whisper int8 greedy": (FW, {"compute_type": "int8", "beam_size": 1}),
    # The batched rows say whether they decode Whisper's timestamp tokens: faster-whisper's batched pipeline
    # leaves them out by default (one segment per VAD chunk); subtitles need them.
    "faster-whisper batched int8 beam5 notimestamps": (FW, {"compute_type": "int8", "beam_size": 5,
                                                             "batch_size": BATCH}),
    "faster-whisper batched int8 greedy notimestamps": (FW, {"compute_type": "int8", "beam_size": 1,
                                                              "batch_size": BATCH}),
    "faster-whisper batched int8 greedy timestamps": (FW, {"compute_type": "int8", "beam_size": 1,
                                                            "batch_size": BATCH, "timestamps": True}),
    f"faster-whisper {AS_SHIPPED}": (FW, {"as_shipped": True}),
    "whisper.cpp f16": (WCPP, {"quantization": "f16"}),
    "whisper.cpp q8_0": (WCPP, {"quantization": "q8_0"}),
    "whisper.cpp q5_0": (WCPP, {"quantization": "q5_0"}),
    "transformers generate sdpa fp32": (HF_GENERATE, {"dtype": "float32"}),
    "transformers generate sdpa bf16": (HF_GENERATE, {"dtype": "bfloat16"}),
    "transformers pipeline sdpa fp32": (HF_PIPELINE, {"dtype": "float32", "batch_size": BATCH}),
    "transformers pipeline sdpa bf16": (HF_PIPELINE, {"dtype": "bfloat16", "batch_size": BATCH}),
    OURS + "ct2 int8 batched vad greedy notimestamps": ("ct2", {"compute_type": "int8", "batch_size": BATCH,
                                                                "vad_filter": True, "timestamps": False}),
    OURS + "ct2 int8 batched vad greedy timestamps": ("ct2", {"compute_type": "int8", "batch_size": BATCH,
                                                              "vad_filter": True}),
    OURS + "ct2 int8 batched vad beam5 timestamps": ("ct2", {"compute_type": "int8", "batch_size": BATCH,
                                                             "vad_filter": True, "beam_size": 5}),
    OURS + "ct2 int8 batched greedy timestamps": ("ct2", {"compute_type": "int8", "batch_size": BATCH}),
    OURS + "ct2 int8 batched greedy notimestamps": ("ct2", {"compute_type": "int8", "batch_size": BATCH,
                                                            "timestamps": False}),
    OURS + "ct2 int8 sequential greedy": ("ct2", {"compute_type": "int8"}),
    # infer.py --bf16 --batch_size: bfloat16 weights and activations, windows side by side.
    OURS + "transformers bf16 batched no-fallback": ("transformers", {"batch_size": BATCH, "fallback": False,
                                                                      "compute_type": "bfloat16"}),
    # The command a user types; its in-process time is the one its summary line prints. Every CLI row writes
    # --output_format=txt, so --timestamps is left to decide (off when batched); the second row asks for
    # them, as the SRT/VTT writers do.
    OURS + "infer_ct2.py --use_int8 --batch_size --vad_filter --output_format=txt": (CLI, {
        "script": "infer_ct2.py", "flags": ["--use_int8", "--batch_size={batch}", "--vad_filter",
                                            "--cpu_threads={threads}"]}),
    OURS + "infer_ct2.py --use_int8 --batch_size --vad_filter --timestamps": (CLI, {
        "script": "infer_ct2.py", "flags": ["--use_int8", "--batch_size={batch}", "--vad_filter", "--timestamps",
                                            "--cpu_threads={threads}"]}),
    OURS + "infer_ct2.py (defaults)": (CLI, {"script": "infer_ct2.py", "flags": []}),
}
CLI_MODEL = {"infer_ct2.py": "ct2", "infer.py": "transformers"}
# Which compute type the floor of a row uses.
ROW_DTYPE = {"int8": "int8", "f16": "float32", "q8_0": "int8", "q5_0": "int8", "float32": "float32",
             "bfloat16": "bfloat16"}


def check_configs() -> None:
    """Every row names a peer, a registered backend or a script, and only options that backend takes."""
    for name, (engine, settings) in CONFIGS.items():
        if engine in PEER_MODEL:
            continue
        if engine == CLI:
            assert settings["script"] in CLI_MODEL, name
            continue
        if engine not in BACKENDS:
            raise AssertionError(f"CONFIGS[{name!r}]: {engine!r} is not a backend of the registry")
        unknown = set(settings) - set(DECODING_SETTINGS) - set(BACKENDS[engine].options)
        if unknown:
            raise AssertionError(f"CONFIGS[{name!r}]: the {engine} backend takes no {', '.join(sorted(unknown))}")


check_configs()


def is_ours(name: str) -> bool:
    return name.startswith(OURS)


@dataclass
class BenchmarkArguments:
    audio_path: str = field(default="dataset/en_long.flac", metadata={"help": "audio file to transcribe"})
    reference_path: Optional[str] = field(default=None, metadata={
        "help": "text file with the reference transcript; unset = no error rate column"})
    model_path: str = field(default=default_model("transformers"), metadata={"help": "transformers model folder"})
    ct2_model_path: Optional[str] = field(default=None, metadata={
        "help": "CTranslate2 folder of the same model; unset = convert model_path into a temp folder"})
    configs: str = field(default="all", metadata={
        "help": "comma-separated row names to run (see the table), or 'all': " + ", ".join(CONFIGS)})
    language: Optional[str] = field(default=None, metadata={"help": "language name or code; unset = detect"})
    batch_size: int = field(default=8, metadata={"help": "batch size of the batched rows"})
    threads: int = field(default=0, metadata={
        "help": "CPU threads of every row at its best (the 'as shipped' rows keep their library's default); "
                "0 = this machine's cores"})
    repeats: int = field(default=3, metadata={"help": "rounds; the table shows each row's median"})
    limit_s: float = field(default=0, metadata={
        "help": "stop a run after this many seconds and report the row as '> limit' (0 = no limit)"})
    floor: bool = field(default=True, metadata={
        "help": "measure this CPU's matmul throughput and memory bandwidth and show each row's distance "
                "from the arithmetic floor"})
    readme: Optional[str] = field(default=None, metadata={
        "help": "also put the table, the goals, the chart and this command in this README's "
                "'speed-inference' section (between its marker comments)"})
    output_prefix: Optional[str] = field(default=None, metadata={
        "help": "write <prefix>.md (table), <prefix>.json (every run) and <prefix>.png (bar chart)"})

    def __post_init__(self):
        unknown = [name for name in self.config_names if name not in CONFIGS]
        if unknown or not self.config_names:
            raise UsageError(f"--configs: unknown {', '.join(unknown) or '(none)'}; valid: {', '.join(CONFIGS)}")
        if self.repeats < 1 or self.batch_size < 1 or self.threads < 0:
            raise UsageError("--repeats and --batch_size must be at least 1, --threads at least 0")
        if self.limit_s < 0:
            raise UsageError(f"--limit_s must be 0 (no limit) or more, got {self.limit_s}")
        self.threads = self.threads or os.cpu_count() or 1

    @property
    def config_names(self) -> list[str]:
        if self.configs.strip() == "all":
            return list(CONFIGS)
        return [name.strip() for name in self.configs.split(",") if name.strip()]


def error_rate_of(reference: str, hypothesis: str, metric: str, language: Optional[str],
                  english_spelling: Optional[dict]) -> float:
    from utils.core.metrics import error_rate

    return error_rate([reference], [hypothesis], metric, language=language,
                      english_spelling=english_spelling).value


def timed(transcribe) -> tuple[str, float]:
    began = time.perf_counter()
    text = transcribe()
    return text, time.perf_counter() - began


def run_faster_whisper(settings: dict, model_path: str, audio, language: Optional[str], threads: int):
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    def joined(segments):
        return " ".join(segment.text.strip() for segment in segments)

    if settings.get("as_shipped"):
        model = WhisperModel(model_path)
        return timed(lambda: joined(model.transcribe(audio, language=language)[0]))
    model = WhisperModel(model_path, device="cpu", compute_type=settings["compute_type"], cpu_threads=threads)
    beam = settings["beam_size"]
    if settings.get("batch_size"):
        # Its README's batched recipe: the pipeline cuts the file at the Silero VAD's pauses.
        pipeline = BatchedInferencePipeline(model)
        return timed(lambda: joined(pipeline.transcribe(
            audio, language=language, beam_size=beam, batch_size=settings["batch_size"],
            without_timestamps=not settings.get("timestamps", False))[0]))
    return timed(lambda: joined(model.transcribe(audio, language=language, beam_size=beam)[0]))


def run_whisper_cpp(model_path: str, audio, language: Optional[str], threads: int):
    from pywhispercpp.model import Model

    model = Model(model_path, n_threads=threads, print_progress=False, print_realtime=False,
                  redirect_whispercpp_logs_to=None)
    return timed(lambda: " ".join(segment.text.strip() for segment in
                                  model.transcribe(audio, language=language or "auto")))


def run_transformers(engine: str, settings: dict, model_path: str, audio, language: Optional[str], threads: int):
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from utils.core.audio import CHUNK_LENGTH, SAMPLE_RATE

    torch.set_num_threads(threads)
    dtype = getattr(torch, settings["dtype"])
    processor = WhisperProcessor.from_pretrained(model_path)
    if processor.tokenizer.pad_token is None:   # the pipeline pads a batch's texts; Whisper pads with end-of-text
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    model = WhisperForConditionalGeneration.from_pretrained(model_path, attn_implementation="sdpa",
                                                            dtype=dtype).eval()
    # English-only models take no language or task.
    kwargs = dict(language=language, task="transcribe") if language and model.generation_config.is_multilingual \
        else {}
    if engine == HF_PIPELINE:
        from transformers import pipeline

        recogniser = pipeline("automatic-speech-recognition", model=model, tokenizer=processor.tokenizer,
                              feature_extractor=processor.feature_extractor, dtype=dtype, device="cpu")
        with torch.inference_mode():
            return timed(lambda: recogniser({"raw": audio, "sampling_rate": SAMPLE_RATE}, chunk_length_s=CHUNK_LENGTH,
                                            batch_size=settings["batch_size"], return_timestamps=True,
                                            generate_kwargs=kwargs)["text"])

    def generate():
        # transformers' documented long-form recipe: the whole file's features in one generate call.
        long = len(audio) > CHUNK_LENGTH * SAMPLE_RATE
        inputs = processor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt", return_attention_mask=True,
                           **(dict(truncation=False, padding="longest") if long else {}))
        tokens = model.generate(inputs.input_features.to(dtype), attention_mask=inputs.attention_mask,
                                return_timestamps=True, **kwargs)
        return processor.batch_decode(tokens, skip_special_tokens=True)[0]

    with torch.inference_mode():
        return timed(generate)


def run_ours(engine: str, settings: dict, model_path: str, audio, language: Optional[str], threads: int):
    """One row through the registry's backend, as infer.py / infer_ct2.py run it; returns (text, seconds)."""
    from utils.inference.registry import load_transcriber
    from utils.inference.transcriber import TranscribeOptions

    options = {key: value for key, value in settings.items() if key not in DECODING_SETTINGS}
    decoding = TranscribeOptions(language=language, beam_size=settings.get("beam_size", 1),
                                 vad_filter=settings.get("vad_filter", False),
                                 timestamps=settings.get("timestamps", True),
                                 temperature_increment_on_fallback=0.2 if settings.get("fallback", True) else 0.0)
    if "cpu_threads" in BACKENDS[engine].options:
        options["cpu_threads"] = threads
    transcriber = load_transcriber(engine, model_path, **options)
    if hasattr(transcriber, "preload"):
        transcriber.preload(decoding.beam_size)   # whisper.cpp loads lazily; keep loading out of the timing
    began = time.perf_counter()
    segments, _ = transcriber.transcribe(audio, decoding)
    text = " ".join(segment.text for segment in segments)
    return text, time.perf_counter() - began


def transcribe_once(engine: str, settings: dict, model_path: str, audio_path: str, language: Optional[str],
                    threads: int) -> dict:
    """One configuration on one file, in this (fresh) process; returns seconds, text and peak memory."""
    from utils.core.audio import load_audio

    audio = load_audio(audio_path)
    if engine == FW:
        text, seconds = run_faster_whisper(settings, model_path, audio, language, threads)
    elif engine == WCPP:
        text, seconds = run_whisper_cpp(model_path, audio, language, threads)
    elif engine in (HF_GENERATE, HF_PIPELINE):
        text, seconds = run_transformers(engine, settings, model_path, audio, language, threads)
    else:
        text, seconds = run_ours(engine, settings, model_path, audio, language, threads)
    return {"seconds": seconds, "text": text, "peak_mb": peak_memory_mb()}


def peak_memory_mb() -> float:
    """This process's peak resident memory. VmHWM, not getrusage's ru_maxrss: the latter survives
    exec, so a spawned child would report its (larger) parent's peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


class RowFailed(UserError):
    """A configuration failed in its child process; the message names the row and the error."""


def _child(queue, *args):
    try:
        queue.put(transcribe_once(*args))
    except BaseException as exc:  # reported by the parent with the row's name
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def stopped_run(limit_s: float) -> dict:
    return {"seconds": float(limit_s), "process_s": float(limit_s), "text": "", "peak_mb": float("nan"),
            "stopped": True}


def run_isolated(*args, limit_s: float = 0) -> dict:
    """transcribe_once in a fresh process; a run past `limit_s` (0 = none) is stopped and
    recorded as taking at least that long, so one pathological row cannot stall the table.
    process_s is the whole process: interpreter start, imports, model load and transcription."""
    import queue as queue_module

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, *args))
    began = time.perf_counter()
    process.start()
    try:
        result = queue.get(timeout=limit_s or None)
    except queue_module.Empty:
        process.terminate()
        process.join()
        return stopped_run(limit_s)
    process.join()
    if "error" in result:
        raise RowFailed(result["error"])
    return dict(result, process_s=time.perf_counter() - began)


SUMMARY = re.compile(r"transcribed [\d.]+ s of audio in ([\d.]+) s")


def run_cli(settings: dict, model_path: str, audio_path: str, language: Optional[str], threads: int,
            batch_size: int, limit_s: float, workdir: str) -> dict:
    """The script as a user runs it, timed from outside; its transcript is read from its .txt output."""
    flags = [flag.format(batch=batch_size, threads=threads) for flag in settings["flags"]]
    out = tempfile.mkdtemp(dir=workdir)
    command = [sys.executable, "-X", "importtime", settings["script"], f"--audio_path={audio_path}",
               f"--model_path={model_path}", f"--output_dir={out}", "--output_format=txt",
               *([f"--language={language}"] if language else []), *flags]
    log = os.path.join(out, "log")
    with open(log + ".out", "w") as stdout, open(log + ".err", "w") as stderr:
        began = time.perf_counter()
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=stdout, stderr=stderr)
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if limit_s and time.perf_counter() - began > limit_s:
                process.kill()
                os.wait4(process.pid, 0)
                return stopped_run(limit_s)
            time.sleep(0.05)
    process_s = time.perf_counter() - began
    with open(log + ".out", encoding="utf-8") as handle:
        output = handle.read()
    with open(log + ".err", encoding="utf-8") as handle:
        errors = handle.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RowFailed(f"{' '.join(command[3:])} exited with {os.waitstatus_to_exitcode(status)}: "
                        f"{errors.strip().splitlines()[-1:]}")
    seconds = float(SUMMARY.search(output).group(1))
    name = os.path.splitext(os.path.basename(audio_path))[0] + ".txt"
    with open(os.path.join(out, name), encoding="utf-8") as handle:
        text = handle.read()
    # -X importtime lists every module the script imported (on stderr): the heavy ones are named.
    heavy = sorted(m for m in ("torch", "transformers") if re.search(rf"\|\s+{m}$", errors, re.M))
    return {"seconds": seconds, "process_s": process_s, "text": text, "peak_mb": usage.ru_maxrss / 1024,
            "imported": heavy}


def runnable_rows(args: BenchmarkArguments) -> list[str]:
    """The rows asked for; with --configs=all, without the bf16 rows on a CPU that cannot run them."""
    names = args.config_names
    if args.configs.strip() == "all":
        from utils.core.devices import cpu_supports_bf16

        if not cpu_supports_bf16():   # infer.py --bf16 refuses such a CPU, so its rows cannot run
            print("this CPU has no bfloat16 instructions: the bf16 rows are left out", flush=True)
            names = [name for name in names if row_dtype(name) != "bfloat16"]
    return names


def model_of(name: str, paths: dict) -> str:
    engine, settings = CONFIGS[name]
    if engine == WCPP:
        return paths["ggml"][settings["quantization"]]
    if engine == CLI:
        return paths[CLI_MODEL[settings["script"]]]
    return paths[PEER_MODEL.get(engine, engine)]


def model_paths(args: BenchmarkArguments, names: list[str], workdir: str) -> dict:
    """backend name -> the model its rows read; a CTranslate2 folder not given is made from --model_path
    in `workdir`, and so are the GGML files (one per quantization the rows use)."""
    paths = {"transformers": args.model_path, "ct2": args.ct2_model_path, "ggml": {}}
    assert set(paths) == set(BACKEND_NAMES), "a new backend needs its model here"
    needed = {PEER_MODEL.get(engine, CLI_MODEL.get(settings.get("script"), engine))
              for engine, settings in (CONFIGS[name] for name in names)}
    if "ct2" in needed and not paths["ct2"]:
        from utils.export.ct2_export import export_ct2

        paths["ct2"] = os.path.join(workdir, "ct2")
        export_ct2(args.model_path, paths["ct2"], "float16", force=False)
    for quantization in sorted({CONFIGS[name][1]["quantization"] for name in names if CONFIGS[name][0] == WCPP}):
        from utils.export.ggml import export_ggml

        paths["ggml"][quantization] = os.path.join(workdir, f"ggml-{quantization}.bin")
        export_ggml(args.model_path, paths["ggml"][quantization], quantization, progress=False)
    return paths


def row_settings(name: str, args: BenchmarkArguments) -> dict:
    return {k: (args.batch_size if v == BATCH else v) for k, v in CONFIGS[name][1].items()}


def run_rounds(args: BenchmarkArguments, names: list[str], paths: dict, language: Optional[str],
               workdir: str, failures: dict) -> dict:
    """row name -> its results, rounds interleaved (every row once per round); a row that fails is
    named in `failures` (name -> error) and not run again."""
    from tqdm import tqdm

    runs: dict = {name: [] for name in names}
    with tqdm(total=len(names) * args.repeats, desc="benchmark runs", file=sys.stderr) as bar:
        for round_index in range(args.repeats):
            for name in names:
                if name in failures:
                    bar.update(1)
                    continue
                engine, settings = CONFIGS[name][0], row_settings(name, args)
                try:
                    if engine == CLI:
                        result = run_cli(settings, model_of(name, paths), args.audio_path, language, args.threads,
                                         args.batch_size, args.limit_s, workdir)
                    else:
                        result = run_isolated(engine, settings, model_of(name, paths), args.audio_path, language,
                                              args.threads, limit_s=args.limit_s)
                except RowFailed as exc:
                    # One broken row must not cost the others' hour: it leaves the table, with its reason.
                    failures[name] = str(exc)
                    bar.write(f"round {round_index + 1} {name} failed: {exc}")
                    bar.update(1)
                    continue
                result["load"] = os.getloadavg()[0]
                runs[name].append(result)
                stopped = " (stopped at --limit_s)" if result.get("stopped") else ""
                bar.write(f"round {round_index + 1} {name}: {result['seconds']:.1f} s in the process, "
                          f"{result['process_s']:.1f} s whole{stopped}, peak {result['peak_mb']:.0f} MB, "
                          f"load {result['load']:.1f}")
                bar.update(1)
    return {name: results for name, results in runs.items() if name not in failures}


def startup_times(repeats: int) -> dict:
    """Whole-process seconds of `infer_ct2.py --help` and of `python -c "import faster_whisper"`,
    interleaved, median of `repeats`; and whether --help imported torch or transformers."""
    commands = {"infer_ct2.py --help": [sys.executable, "-X", "importtime", "infer_ct2.py", "--help"],
                "python -c 'import faster_whisper'": [sys.executable, "-X", "importtime", "-c",
                                                      "import faster_whisper"]}
    times: dict = {name: [] for name in commands}
    heavy: dict = {}
    for _ in range(repeats):
        for name, command in commands.items():
            began = time.perf_counter()
            process = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
            times[name].append(time.perf_counter() - began)
            heavy[name] = sorted(m for m in ("torch", "transformers")
                                 if re.search(rf"\|\s+{m}$", process.stderr, re.M))
    return {name: {"seconds": statistics.median(values), "imported": heavy[name]} for name, values in times.items()}


def row_dtype(name: str) -> str:
    engine, settings = CONFIGS[name]
    if engine == CLI:
        return "int8" if "--use_int8" in settings["flags"] else "float32"
    kind = settings.get("compute_type") or settings.get("dtype") or settings.get("quantization") or "float32"
    return ROW_DTYPE[kind]


def machine_floor(args: BenchmarkArguments) -> Optional[dict]:
    """This CPU's matmul rates and memory bandwidth, measured in a fresh process (torch's threads)."""
    if not args.floor:
        return None
    from concurrent.futures import ProcessPoolExecutor

    from utils.bench.floor import measure_machine

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(measure_machine, args.threads).result()


def token_count(model_path: str, text: str) -> int:
    from tokenizers import Tokenizer

    return len(Tokenizer.from_file(os.path.join(model_path, "tokenizer.json")).encode(text).ids)


def summarise(runs: dict, duration: float, reference: Optional[str], metric: str, language: Optional[str],
              args: BenchmarkArguments, machine: Optional[dict]) -> list[dict]:
    from utils.bench.floor import floor_seconds, model_config
    from utils.core.text import english_spelling_map

    spelling = english_spelling_map(args.model_path)
    config = model_config(args.model_path) if machine else None
    rows = []
    for name, results in runs.items():
        seconds = statistics.median(r["seconds"] for r in results)
        finished = [r for r in results if not r.get("stopped")]
        row = {"name": name, "seconds": seconds, "process_s": statistics.median(r["process_s"] for r in results),
               "rtf": seconds / duration, "runs": len(results), "stopped": len(results) - len(finished),
               "peak_mb": max((r["peak_mb"] for r in finished), default=float("nan")),
               "spread": (min(r["seconds"] for r in results), max(r["seconds"] for r in results)),
               "dtype": row_dtype(name)}
        if reference is not None and finished:
            row["error_rate"] = statistics.median(error_rate_of(reference, r["text"], metric, language, spelling)
                                                  for r in finished)
        if machine and (reference or finished):
            tokens = token_count(args.model_path, reference if reference is not None else finished[0]["text"])
            batch = row_settings(name, args).get("batch_size", 1) if CONFIGS[name][0] != CLI else \
                (args.batch_size if any("batch_size" in f for f in CONFIGS[name][1]["flags"]) else 1)
            row["floor"] = floor_seconds(config, machine, row["dtype"], duration, tokens, batch)
        rows.append(row)
    return rows


def is_peer_at_best(row: dict) -> bool:
    return not is_ours(row["name"]) and AS_SHIPPED not in row["name"]


def goals(rows: list[dict], startup: Optional[dict]) -> list[str]:
    """The issue's goals as sentences with their measured ratios."""
    lines = []
    peers = [row for row in rows if is_peer_at_best(row) and not row.get("stopped")]
    ours = [row for row in rows if is_ours(row["name"])]
    if peers and ours:
        best = min(peers, key=lambda row: row["seconds"])
        allowed = best.get("error_rate", float("inf")) + 0.005
        good = [row for row in ours if row.get("error_rate", 0) <= allowed]
        error = f" ({best['error_rate']:.1%})" if "error_rate" in best else ""
        if good:
            fastest = min(good, key=lambda row: row["seconds"])
            ratio = best["seconds"] / fastest["seconds"]
            verdict = "met" if ratio >= 1.5 else "not met"
            error_ours = f" ({fastest['error_rate']:.1%})" if "error_rate" in fastest else ""
            lines.append(f"fastest peer at its best: {best['name']} {best['seconds']:.1f} s{error}; our fastest within "
                         f"its error rate + 0.5 points: {fastest['name']} {fastest['seconds']:.1f} s{error_ours}, "
                         f"{ratio:.2f}x (goal 1.5x: {verdict})")
        else:
            lines.append(f"none of our rows is within 0.5 points of the error rate of {best['name']}{error}")
    shipped = [row for row in rows if AS_SHIPPED in row["name"]]
    if shipped and ours:
        fastest = min(ours, key=lambda row: row["seconds"])
        for row in shipped:
            lines.append(f"{row['name']}: {row['seconds']:.1f} s; {fastest['name']} is "
                         f"{row['seconds'] / fastest['seconds']:.2f}x faster (the library's defaults, not its best)")
    floored = [row for row in rows if "floor" in row and not row.get("stopped")]
    if floored:
        fastest = min(floored, key=lambda row: row["seconds"])
        floor = fastest["floor"]
        lines.append(f"arithmetic floor of the fastest row ({fastest['name']}, {fastest['dtype']}): "
                     f"{floor['seconds']:.2f} s (encoder {floor['encoder_s']:.2f} s + decoder weights "
                     f"{floor['decoder_s']:.2f} s); the row takes {fastest['seconds'] / floor['seconds']:.1f}x that")
    if startup:
        ours_s, fw = startup["infer_ct2.py --help"], startup["python -c 'import faster_whisper'"]
        imported = ", ".join(ours_s["imported"]) or "neither torch nor transformers"
        lines.append(f"start-up: infer_ct2.py --help {ours_s['seconds']:.2f} s (imports {imported}), "
                     f"import faster_whisper {fw['seconds']:.2f} s (whole processes, median)")
    return lines


def markdown(rows: list[dict], header: str, metric: str) -> str:
    has_error = any("error_rate" in row for row in rows)
    has_floor = any("floor" in row for row in rows)
    lines = [header, "",
             "| configuration | seconds (median) | min-max | whole process s | real-time factor | peak memory MB"
             + (f" | {metric.upper()}" if has_error else "") + (" | x floor" if has_floor else "") + " |",
             "|---|---|---|---|---|---" + ("|---" if has_error else "") + ("|---" if has_floor else "") + "|"]
    for row in rows:
        # A median over stopped runs is only a lower bound.
        at_least = "> " if row.get("stopped", 0) * 2 >= row["runs"] else ""
        cells = [row["name"], f"{at_least}{row['seconds']:.1f}", f"{row['spread'][0]:.1f}-{row['spread'][1]:.1f}",
                 f"{at_least}{row['process_s']:.1f}", f"{at_least}{row['rtf']:.3f}",
                 "n/a" if row["peak_mb"] != row["peak_mb"] else f"{row['peak_mb']:.0f}"]
        if has_error:
            cells.append(f"{100 * row['error_rate']:.1f} %" if "error_rate" in row else "n/a (stopped)")
        if has_floor:
            cells.append(f"{row['seconds'] / row['floor']['seconds']:.1f}x ({row['dtype']})" if "floor" in row
                         else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bar_chart(rows: list[dict], path: str, title: str) -> None:
    plt = pyplot()
    names = [row["name"] for row in rows]
    seconds = [row["seconds"] for row in rows]
    colours = ["#1f77b4" if is_ours(name) else "#bbbbbb" if AS_SHIPPED in name else "#777777" for name in names]
    figure, axes = plt.subplots(figsize=(9, 0.4 * len(rows) + 1.2))
    axes.barh(names[::-1], seconds[::-1], color=colours[::-1])
    for y, row in enumerate(rows[::-1]):
        stopped = row.get("stopped", 0) * 2 >= row["runs"]
        axes.text(row["seconds"], y, f" {'> ' if stopped else ''}{row['seconds']:.1f} s"
                  f"{' (stopped)' if stopped else ''}", va="center", fontsize=8)
    axes.set_xlabel("seconds to transcribe in the process (median; blue = ours, grey = peers, light = as shipped)")
    axes.set_title(title, fontsize=9)
    axes.set_xlim(0, max(seconds) * 1.3)
    axes.tick_params(axis="y", labelsize=8)
    figure.tight_layout()
    save_figure(figure, path)


def write_outputs(args: BenchmarkArguments, command: str, header: str, table: str, summary: list[str],
                  rows: list[dict], runs: dict, extra: dict, duration: float, metric: str) -> None:
    """--output_prefix's .md, .json and .png, and --readme's section."""
    if args.output_prefix:
        write_text_atomic(args.output_prefix + ".md", table + "\n" + "\n".join(f"- {line}" for line in summary) + "\n")
        write_json_atomic(args.output_prefix + ".json", {"header": header, "metric": metric, "rows": rows,
                                                         "goals": summary, "runs": runs, **extra}, indent=1)
        bar_chart(rows, args.output_prefix + ".png", f"{os.path.basename(args.audio_path)} ({duration:.0f} s), "
                                                     f"{os.path.basename(os.path.normpath(args.model_path))}")
        print(f"wrote {args.output_prefix}.md, .json and .png")
    if args.readme:
        write_readme_section(args.readme, "speed-inference", command, table, summary,
                             args.output_prefix + ".png" if args.output_prefix else None)


def read_reference(path: Optional[str]) -> Optional[str]:
    if not path:
        return None
    if not os.path.isfile(path):
        raise UserError(f"--reference_path {path}: file not found")
    with open(path, encoding="utf-8") as file:
        return file.read()


def benchmark(args: BenchmarkArguments, command: str) -> None:
    from utils.core.audio import duration_of, load_audio
    from utils.core.languages import to_language_code
    from utils.core.metrics import CER_LANGUAGES

    names = runnable_rows(args)
    language = to_language_code(args.language)
    metric = "cer" if language in CER_LANGUAGES else "wer"
    reference = read_reference(args.reference_path)
    print_config("benchmark configuration", args)
    duration = duration_of(load_audio(args.audio_path))
    load_before = os.getloadavg()
    machine = machine_floor(args)
    if machine:
        print("matmul GFLOP/s " + ", ".join(f"{k} {v:.0f}" for k, v in machine["gflops"].items())
              + f"; memory bandwidth {machine['bandwidth_gbs']:.1f} GB/s", flush=True)
    with tempfile.TemporaryDirectory(prefix="benchmark-") as workdir:
        failures: dict = {}
        runs = run_rounds(args, names, model_paths(args, names, workdir), language, workdir, failures)
    if not runs:
        raise RowFailed("every row failed: " + "; ".join(f"{name}: {error}" for name, error in failures.items()))
    startup = startup_times(args.repeats) if any(CONFIGS[name][0] == CLI for name in names) else None
    load_after = os.getloadavg()
    loads = [run["load"] for results in runs.values() for run in results]

    rows = summarise(runs, duration, reference, metric, language, args, machine)
    floor_note = (f" Floor: matmul {machine['gflops']['float32']:.0f} GFLOP/s float32, "
                  f"{machine['gflops']['bfloat16']:.0f} bfloat16 (int8 rows: the fastest of these and torch's int8), "
                  f"memory {machine['bandwidth_gbs']:.1f} GB/s.") if machine else ""
    header = (f"`{os.path.basename(args.audio_path)}` ({duration:.1f} s), model `{args.model_path}`, "
              f"language {language or 'detected'}, {args.threads} threads, batch {args.batch_size}, "
              f"median of {args.repeats} interleaved rounds. Machine: {machine_description()}; "
              f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after, "
              f"{min(loads):.1f}-{max(loads):.1f} during the runs.{floor_note}")
    table = markdown(rows, header, metric)
    summary = goals(rows, startup) + [f"{name} failed and is left out: {error}" for name, error in failures.items()]
    print("\n" + table)
    for line in summary:
        print(line)
    write_outputs(args, command, header, table, summary, rows, runs, {"startup": startup, "machine": machine,
                                                                               "failures": failures},
                  duration, metric)
    fastest = min(rows, key=lambda row: row["seconds"])
    print(f"benchmarked {len(names)} configurations x {args.repeats} rounds on {duration:.1f} s of audio; "
          f"fastest: {fastest['name']} at real-time factor {fastest['rtf']:.3f}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(BenchmarkArguments, argv, description=__doc__)
    return guarded(lambda: benchmark(args, command_line("tools/benchmark_inference.py", argv)))


if __name__ == "__main__":
    sys.exit(main())
