"""The small measurements behind docs/performance.md's explanations, rerunnable.

    python tools/microbenchmarks.py attention         # CPU sdpa against the plain product, decode and training shapes
    python tools/microbenchmarks.py train-step        # one decoder-only LoRA step, peft's and fast_lora.py's, profiled
    python tools/microbenchmarks.py dropout           # what one LoRA dropout mask over the encoder frames costs
    python tools/microbenchmarks.py encoder-calls     # encoder passes in generate, with and without the memo
    python tools/microbenchmarks.py decode-attention  # a batched transcription, decode steps via sdpa vs plain
    python tools/microbenchmarks.py best-of           # ct2 fallback, 5 samples per temperature vs 1: seconds, CER/WER
    python tools/microbenchmarks.py heap              # page faults of a repeated 96 MB tensor, glibc default vs heap

Each prints one line per measurement (milliseconds or seconds, median of --repeats). The benchmarks
in benchmark_inference.py / benchmark_training.py measure the goals; these measure why.
"""
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Literal, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.core.cli import guarded, parse_args, print_config  # noqa: E402
from utils.core.errors import UsageError  # noqa: E402
from utils.inference.registry import default_model  # noqa: E402

BENCHMARKS = ("attention", "train-step", "dropout", "encoder-calls", "decode-attention", "best-of", "heap")


def timed(run, repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def plain_attention(query, key, value):
    import torch

    weights = torch.softmax(torch.matmul(query, key.transpose(-1, -2)) * query.shape[-1] ** -0.5, dim=-1)
    return torch.matmul(weights, value)


def attention(args) -> None:
    """Cross-attention over the encoder frames: one query row (a decode step) and a label-length
    query with its backward pass (a training step)."""
    import torch
    import torch.nn.functional as F

    from utils.core.devices import cpu_has_amx
    from utils.inference.backends.transformers import plain_product_for_decode_steps

    heads, width = 8, 64
    for dtype in (torch.float32, torch.bfloat16):
        name = str(dtype).replace("torch.", "")
        picked = "plain" if plain_product_for_decode_steps(dtype) else "sdpa"
        print(f"{name} decode steps on this CPU (AMX: {cpu_has_amx()}) take: {picked}")
        key, value = (torch.randn(args.batch, heads, args.frames, width, dtype=dtype) for _ in range(2))
        query = torch.randn(args.batch, heads, 1, width, dtype=dtype)
        for label, function in (("sdpa", F.scaled_dot_product_attention), ("plain", plain_attention)):
            seconds = timed(lambda: function(query, key, value), args.repeats)
            print(f"decode step, {name}, batch {args.batch}, {args.frames} frames: {label} {seconds * 1000:.2f} ms")
        parts = [torch.randn(args.batch, heads, n, width, dtype=dtype, requires_grad=True)
                 for n in (args.tokens, args.frames, args.frames)]
        for label, function in (("sdpa", F.scaled_dot_product_attention), ("plain", plain_attention)):
            seconds = timed(lambda: function(*parts).sum().backward(), args.repeats)
            print(f"training, {name}, batch {args.batch}, {args.tokens} tokens x {args.frames} frames, "
                  f"forward+backward: {label} {seconds * 1000:.2f} ms")


def lora_model(model_path: str, dropout: float):
    from transformers import WhisperForConditionalGeneration

    from utils.training.lora import DEFAULT_TARGET_MODULES, add_adapter

    model = WhisperForConditionalGeneration.from_pretrained(model_path)
    model = add_adapter(model, use_adalora=False, r=32, alpha=64, dropout=dropout,
                        target_modules=DEFAULT_TARGET_MODULES, freeze_encoder=True)
    model.config.use_cache = False      # as finetune.py trains
    return model.train()


def print_profile(step) -> None:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        step()
    total = sum(event.self_cpu_time_total for event in profiler.key_averages())
    for event in sorted(profiler.key_averages(), key=lambda e: -e.self_cpu_time_total)[:6]:
        print(f"  {event.key}: {100 * event.self_cpu_time_total / total:.0f} % of the step")


def train_step(args) -> None:
    """A decoder-only LoRA step on stored encoder outputs, with peft's LoRA as it comes and as
    finetune.py runs it (utils/training/fast_lora.py: gap dropout, fused adapter sum), profiled; then the
    same step with every layer's base k_proj/v_proj output over the encoder frames computed
    beforehand (the experiment docs/performance.md reports), for LoRA dropout 0.05 and 0."""
    import torch
    from transformers.modeling_outputs import BaseModelOutput

    from utils.training.callbacks import keep_large_tensors_in_the_heap
    from utils.training.fast_lora import speed_up_lora

    keep_large_tensors_in_the_heap()    # as finetune.py does on a CPU
    for rate in (0.05, 0.0):
        model = lora_model(args.model_path, rate)
        torch.manual_seed(0)
        frames = torch.randn(args.batch, args.frames, model.config.d_model)
        labels = torch.randint(0, model.config.vocab_size, (args.batch, args.tokens))

        def step():
            model(encoder_outputs=BaseModelOutput(last_hidden_state=frames), labels=labels).loss.backward()

        print(f"lora_dropout={rate}, peft: {timed(step, args.repeats):.2f} s per step of {args.batch}")
        if rate:
            print_profile(step)
        speed_up_lora(model, seed=0)
        print(f"lora_dropout={rate}, fast_lora: {timed(step, args.repeats):.2f} s per step of {args.batch}")
        if rate:
            print_profile(step)
        for layer in model.base_model.model.model.decoder.layers:
            for name in ("k_proj", "v_proj"):
                base = getattr(layer.encoder_attn, name).base_layer
                with torch.no_grad():
                    stored = base(frames)
                base.forward = lambda _, stored=stored: stored
        seconds = timed(step, args.repeats)
        print(f"lora_dropout={rate}, fast_lora, base k/v stored: {seconds:.2f} s per step of {args.batch}")


def dropout(args) -> None:
    import torch
    import torch.nn.functional as F

    from utils.training.fast_lora import GapDropout

    frames = torch.randn(args.batch, args.frames, 512)
    gap = GapDropout(0.05).train()
    for label, run in (("F.dropout(p=0.05)", lambda: F.dropout(frames, 0.05, True)),
                       ("GapDropout(p=0.05)", lambda: gap(frames)),
                       ("bernoulli_ mask", lambda: torch.empty_like(frames).bernoulli_(0.95)),
                       ("rand < p mask", lambda: torch.rand_like(frames) < 0.95),
                       ("multiply (for scale)", lambda: frames * frames)):
        print(f"{label} over {args.batch} x {args.frames} x 512: {timed(run, args.repeats) * 1000:.1f} ms")


def encoder_calls(args) -> None:
    from utils.core.audio import load_audio
    from utils.inference.registry import load_transcriber
    from utils.inference.transcriber import TranscribeOptions

    audio = load_audio(args.audio_path)
    for memo in (True, False):
        transcriber = load_transcriber("transformers", args.model_path, batch_size=8)
        remembered = transcriber.model.get_encoder().forward
        calls = []

        def counted(*a, compute=remembered.compute, **k):
            features = a[0] if a else k["input_features"]
            calls.append(features.shape[0])
            return compute(*a, **k)

        remembered.compute = counted
        if not memo:
            transcriber.model.get_encoder().forward = counted
        options = TranscribeOptions(language=args.language, temperature_increment_on_fallback=0.0)
        began = time.perf_counter()
        segments, _ = transcriber.transcribe(audio, options)
        list(segments)
        print(f"{'with' if memo else 'without'} the memo: {len(calls)} encoder calls, {sum(calls)} window passes, "
              f"{time.perf_counter() - began:.1f} s")


def decode_attention(args) -> None:
    """The file through the transformers backend (batched, no fallback; bfloat16 where the CPU has it),
    its one-token decode steps forced through sdpa, then the plain product, rounds interleaved."""
    import torch

    import utils.inference.backends.transformers as backend
    from utils.core.audio import load_audio
    from utils.core.devices import cpu_supports_bf16
    from utils.inference.registry import load_transcriber
    from utils.inference.transcriber import TranscribeOptions

    dtype = "bfloat16" if cpu_supports_bf16() else "float32"
    audio = load_audio(args.audio_path)
    transcriber = load_transcriber("transformers", args.model_path, batch_size=args.batch, compute_type=dtype)
    options = TranscribeOptions(language=args.language, temperature_increment_on_fallback=0.0)
    rule = backend.plain_product_for_decode_steps
    chosen = rule(getattr(torch, dtype))
    def run():
        return list(transcriber.transcribe(audio, options)[0])

    run()   # warm-up
    times = {"sdpa": [], "plain": []}
    try:
        for _ in range(args.repeats):
            for path in times:
                backend.plain_product_for_decode_steps = lambda _dtype, plain=(path == "plain"): plain
                began = time.perf_counter()
                run()
                times[path].append(time.perf_counter() - began)
    finally:
        backend.plain_product_for_decode_steps = rule
    for path, seconds in times.items():
        print(f"{dtype} batch {args.batch}, decode steps through {path}: {statistics.median(seconds):.2f} s "
              f"(median of {args.repeats}){'  <- what this CPU takes' if (path == 'plain') == chosen else ''}")


def best_of(args) -> None:
    """faster-whisper samples best_of=5 candidates at each fallback temperature and keeps the most
    probable. Two places where that matters, each with 5 and with 1, rounds interleaved: its sequential
    decoding with fallback (`infer_ct2.py`), and our batched pass that decodes looping windows again
    (`utils/inference/backends/ct2.py`, which uses 1). With --reference_path, the error rate of each run too."""
    from utils.core.audio import load_audio
    from utils.core.metrics import CER_LANGUAGES, error_rate
    from utils.inference.registry import load_transcriber
    from utils.inference.transcriber import MAX_NEW_TOKENS_PER_WINDOW, TranscribeOptions

    audio = load_audio(args.audio_path)
    reference = None
    if args.reference_path:
        with open(args.reference_path, encoding="utf-8") as handle:
            reference = handle.read()
    metric = "cer" if args.language in CER_LANGUAGES else "wer"
    batched = load_transcriber("ct2", args.ct2_model_path, compute_type="int8", batch_size=args.batch,
                               cpu_threads=args.threads)
    model = batched.model
    fw_transcribe = model.transcribe
    options = TranscribeOptions(language=args.language)

    def sequential(samples: int) -> str:
        segments, _ = fw_transcribe(audio, language=args.language, beam_size=1, best_of=samples,
                                    condition_on_previous_text=False,
                                    temperature=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
                                    max_new_tokens=MAX_NEW_TOKENS_PER_WINDOW)
        return "".join(segment.text for segment in segments)

    def batched_with_retry(samples: int) -> str:
        # the retry pass is the only caller that passes best_of; make it pass `samples`
        model.transcribe = lambda *a, **k: fw_transcribe(*a, **(dict(k, best_of=samples) if "best_of" in k else k))
        try:
            return "".join(segment.text for segment in batched.transcribe(audio, options)[0])
        finally:
            model.transcribe = fw_transcribe

    runs = {(name, samples): [] for name in ("sequential fallback", "batched loop retry") for samples in (5, 1)}
    for _ in range(args.repeats):
        for name, samples in runs:
            began = time.perf_counter()
            text = (sequential if name == "sequential fallback" else batched_with_retry)(samples)
            seconds = time.perf_counter() - began
            rate = error_rate([reference], [text], metric).value if reference else None
            runs[(name, samples)].append((seconds, rate))
    for (name, samples), results in runs.items():
        line = f"ct2 int8 {name}, best_of={samples}: {statistics.median(r[0] for r in results):.1f} s"
        if reference:
            line += f", {metric.upper()} {100 * statistics.median(r[1] for r in results):.1f} %"
        print(line + f" (median of {args.repeats})")


# Run in a fresh interpreter per setting: glibc's mallopt switches cannot be turned back within a process.
HEAP_PROBE = """
import resource, statistics, sys, torch
sys.path.insert(0, {repo!r})
if {keep}:
    from utils.training.callbacks import keep_large_tensors_in_the_heap
    keep_large_tensors_in_the_heap()
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.ones(24_000_000)
    del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(statistics.median([faults() for _ in range(6)][1:]))   # the steady state, as step after step
"""


def heap(args) -> None:
    """Minor page faults of a 96 MB tensor allocated and freed again and again, as activations are step
    after step: by default glibc returns such blocks to the kernel and each is faulted in anew; after
    keep_large_tensors_in_the_heap (what finetune.py does on a CPU) the heap keeps the pages."""
    import subprocess

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for keep in (False, True):
        faults = []
        for _ in range(args.repeats):
            out = subprocess.run([sys.executable, "-c", HEAP_PROBE.format(repo=repo, keep=keep)],
                                 capture_output=True, text=True, check=True).stdout
            faults.append(float(out.split()[-1]))
        setting = "keep_large_tensors_in_the_heap" if keep else "glibc default"
        print(f"96 MB tensor after the first, {setting}: {statistics.median(faults):.0f} minor page faults "
              f"(median of {args.repeats} processes)")


@dataclass
class MicrobenchmarkArguments:
    benchmark: Literal[BENCHMARKS] = field(metadata={
        "help": "which measurement (also the first word alone: `microbenchmarks.py attention`)"})
    model_path: str = field(default=default_model("transformers"), metadata={
        "help": "Whisper folder (train-step, encoder-calls, decode-attention)"})
    audio_path: str = field(default="dataset/test_long.wav", metadata={
        "help": "file for encoder-calls, decode-attention, best-of"})
    language: str = field(default="zh", metadata={"help": "language for encoder-calls, decode-attention, best-of"})
    reference_path: Optional[str] = field(default=None, metadata={
        "help": "reference transcript for best-of's error rates"})
    ct2_model_path: str = field(default=default_model("ct2"), metadata={"help": "CTranslate2 model for best-of"})
    batch: int = field(default=8, metadata={"help": "batch size"})
    frames: int = field(default=1500, metadata={"help": "encoder frames (1500 = Whisper's 30 s window)"})
    tokens: int = field(default=28, metadata={"help": "label tokens per clip in training shapes"})
    threads: int = field(default=2, metadata={"help": "torch CPU threads"})
    repeats: int = field(default=5, metadata={"help": "timed calls per measurement (median shown)"})

    def __post_init__(self):
        for name in ("batch", "frames", "tokens", "threads", "repeats"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name} must be at least 1, got {getattr(self, name)}")


def measure(args: MicrobenchmarkArguments) -> None:
    import torch

    print_config("microbenchmarks.py configuration", args)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads")
    {"attention": attention, "train-step": train_step, "dropout": dropout, "encoder-calls": encoder_calls,
     "decode-attention": decode_attention, "best-of": best_of, "heap": heap}[args.benchmark](args)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `microbenchmarks.py attention --repeats=3`: a first word that is not a flag names the benchmark.
    if argv and not argv[0].startswith("-") and not argv[0].endswith(".json"):
        argv = [f"--benchmark={argv[0]}", *argv[1:]]
    args = parse_args(MicrobenchmarkArguments, argv, description=__doc__)
    return guarded(lambda: measure(args))


if __name__ == "__main__":
    sys.exit(main())
