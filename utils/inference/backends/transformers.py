"""Transformers backend: WhisperForConditionalGeneration and its long-form generate."""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
from typing import Iterator, Optional

import numpy as np

from utils.core import devices
from utils.core.audio import CHUNK_LENGTH, SAMPLE_RATE, duration_of, is_silent, split_at_quiet_points
from utils.core.languages import model_languages
from utils.core.models import check_model_dir, load_processor, load_whisper, model_is_multilingual
from utils.inference.transcriber import (
    MAX_NEW_TOKENS_PER_WINDOW,
    ResolvedOptions,
    Segment,
    Transcriber,
    TranscriptionError,
    TranscriptionInfo,
    fit_prompt,
    temperature_schedule,
)

ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")
# The weight and activation types this backend runs in (--compute_type of the server and the window).
COMPUTE_TYPES = ("float32", "bfloat16", "float16")

# Audio is cut into pieces decoded as one batch. With batch_size 1 a piece spans several
# windows and generate's sequential long-form algorithm seeks by the predicted timestamps;
# with batch_size > 1 pieces are single 30 s windows decoded side by side.
SEQUENTIAL_PIECE_SECONDS = 120.0
# A window's last LOOP_TOKENS tokens (or more, see below) repeating a unit of at most
# LOOP_MAX_UNIT tokens is a repetition loop, not speech.
LOOP_TOKENS = 24
LOOP_MAX_UNIT = 8


class RepetitionLoopStop:
    """Stops decoding a window as soon as it is caught in a repetition loop.

    Whisper's own defence (cap of 224 new tokens, then temperature fallback on the compression
    ratio) lets a looping window run to the cap on every attempt: up to 224 wasted decoder steps
    each. Stopping at the first LOOP_TOKENS repeated tokens leaves a sequence that still
    compresses well, so the fallback still sees the loop and decodes the window again.
    A transformers StoppingCriteria (duck-typed: generate only calls it).
    """

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        looping = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for unit in range(1, LOOP_MAX_UNIT + 1):
            span = unit * max(4, -(-LOOP_TOKENS // unit))
            if input_ids.shape[1] < span + 3:   # leave the prompt (start, language, task) alone
                break
            tail = input_ids[:, -span:]
            looping |= (tail[:, unit:] == tail[:, :-unit]).all(dim=1)
        return looping


class _BothLengthsSetFilter(logging.Filter):
    """Drops transformers' "Both `max_new_tokens` and `max_length` seem to have been set" warning.

    Whisper's long-form `generate` fills the default max_length (20) into the generation config it
    hands to the generic `generate`, which then takes any max_length as user-set and logs the warning
    for every window of every file, whatever we pass. We bound windows by max_new_tokens on purpose.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "seem to have been set. `max_new_tokens` will take precedence" not in record.getMessage()


logging.getLogger("transformers.generation.utils").addFilter(_BothLengthsSetFilter())


def quantize_linear_layers(model):
    """Every nn.Linear as dynamic int8 (int8 weights, activations quantized per call): faster than
    float32 on CPUs without bfloat16, slower on ones with AMX, and less accurate either way, because one
    scale per weight matrix is coarse for Whisper's weights (CTranslate2 keeps one per row); the
    measurements are in docs/performance.md.

    torch's own dynamic quantization rather than a new dependency: it needs no calibration data, works
    on any x86/ARM CPU torch supports, and is what CTranslate2's int8 does for its engine. torch marks
    these quantized-tensor functions deprecated in favour of torchao; until they are removed they are
    the only int8 CPU path that ships with torch itself.
    """
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


class EncoderOutputMemo:
    """Runs the encoder once per window, however often generate asks.

    transformers' Whisper generate calls the encoder again for each of its own passes over the same
    window: once to decode, once more in its no-speech check (WhisperNoSpeechDetection re-runs the
    whole model on the features), and once per temperature fallback: twice the encoder passes
    (`python tools/microbenchmarks.py encoder-calls`, docs/performance.md). Installed as the encoder's
    forward, this remembers the last batch's outputs by the content of each window's features and
    answers a repeat call (the same windows, or a subset as in a fallback) from memory. Written here
    because generate has no option to keep its encoder outputs.
    """

    def __init__(self, encoder):
        self.compute = encoder.forward
        self.keys: dict[bytes, int] = {}
        self.hidden = None
        encoder.forward = self

    @staticmethod
    def _key(row) -> bytes:
        import torch

        return hashlib.blake2b(row.contiguous().view(-1).view(torch.uint8).cpu().numpy(), digest_size=16).digest()

    def __call__(self, input_features=None, *args, **kwargs):
        from transformers.modeling_outputs import BaseModelOutput

        plain = (not args and input_features is not None
                 and not any(kwargs.get(k) for k in ("output_attentions", "output_hidden_states")))
        if not plain:   # anything unusual goes straight to the encoder, unremembered
            return self.compute(input_features, *args, **kwargs)
        keys = [self._key(row) for row in input_features]
        if self.hidden is not None and all(k in self.keys for k in keys):
            rows = [self.keys[k] for k in keys]
            return BaseModelOutput(last_hidden_state=self.hidden[rows])
        out = self.compute(input_features, *args, **kwargs)
        self.keys = {k: i for i, k in enumerate(keys)}
        self.hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return out


# torch's CPU scaled_dot_product_attention is several times slower in bfloat16 than a plain
# matmul-softmax-matmul for a single query row (every step of decoding) on CPUs without AMX; with AMX
# tiles sdpa is the faster one, and in float32 the two are even (`python tools/microbenchmarks.py
# attention` and `decode-attention`, docs/performance.md). So on CPU "sdpa" means sdpa, except for
# one-token bfloat16/float16 steps on a CPU without AMX, which take the plain product.
CPU_ATTENTION = "sdpa_cpu_decode"


@functools.lru_cache(maxsize=None)
def plain_product_for_decode_steps(dtype) -> bool:
    """Whether one-token decode steps in `dtype` take the plain product instead of sdpa on this CPU."""
    import torch

    return dtype != torch.float32 and not devices.cpu_has_amx()


def _sdpa_cpu_decode(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    if query.shape[2] != 1 or module.training or not plain_product_for_decode_steps(query.dtype):
        return _sdpa_attention_forward()(module, query, key, value, attention_mask, scaling=scaling,
                                         dropout=dropout, **kwargs)
    import torch

    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        mask = attention_mask[:, :, :, :key.shape[2]]
        if mask.dtype == torch.bool:   # sdpa's masks say which keys to keep
            weights = weights.masked_fill(~mask, torch.finfo(weights.dtype).min)
        else:
            weights = weights + mask
    weights = torch.softmax(weights, dim=-1)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


@functools.lru_cache(maxsize=None)
def _sdpa_attention_forward():
    """transformers' sdpa function, imported once (every attention call of every decoding step asks)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward


def register_cpu_attention() -> str:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(CPU_ATTENTION, _sdpa_cpu_decode)
    ALL_MASK_ATTENTION_FUNCTIONS.register(CPU_ATTENTION, sdpa_mask)
    return CPU_ATTENTION


def check_options(*, use_gpu: bool, batch_size: int, attn_implementation: str,
                  assistant_model_path: Optional[str], compute_type: Optional[str], cpu_threads: int,
                  use_int8: bool) -> None:
    """Refuse, before the model loads, an option this backend cannot honour on this machine."""
    import torch

    if batch_size < 1:
        raise TranscriptionError(f"batch_size must be at least 1, got {batch_size}")
    if cpu_threads < 0:
        raise TranscriptionError(f"cpu_threads must be >= 0, got {cpu_threads}")
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise TranscriptionError(f"unknown attn_implementation {attn_implementation!r}; "
                                 f"valid: {', '.join(ATTN_IMPLEMENTATIONS)}")
    if use_int8 and use_gpu:
        raise TranscriptionError("use_int8 is dynamic int8 quantization for the CPU; on a GPU run in float16 "
                                 "(the default) or use infer_ct2.py --use_int8 (int8_float16)")
    if compute_type is not None and compute_type not in COMPUTE_TYPES:
        raise TranscriptionError(f"compute_type={compute_type} is not one the transformers backend runs in; "
                                 f"it takes {', '.join(COMPUTE_TYPES)} (int8: --use_int8, or --backend=ct2)")
    if compute_type == "float16" and not use_gpu:
        raise TranscriptionError("compute_type=float16 on the transformers backend needs a CUDA GPU (use_gpu); "
                                 "on a CPU use float32, or bfloat16 where the CPU has AVX512-BF16/AMX")
    if compute_type == "bfloat16" and not use_gpu:
        if not devices.cpu_supports_bf16():
            raise TranscriptionError(
                "bfloat16 on the CPU needs AVX512-BF16 or AMX instructions and this CPU has neither (there "
                "it is emulated, slower than float32); run in float32, or use the ct2 backend in int8 "
                "(infer_ct2.py --use_int8) for a faster CPU path")
        if use_int8:
            raise TranscriptionError("use_int8 and bfloat16 exclude each other: pick one")
    if use_gpu and not torch.cuda.is_available():
        raise TranscriptionError("use_gpu was requested but no CUDA GPU is available; run without --use_gpu")
    if attn_implementation == "flash_attention_2" and not use_gpu:
        raise TranscriptionError("flash_attention_2 needs a CUDA GPU (--use_gpu); use sdpa on CPU")
    if attn_implementation == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise TranscriptionError("flash_attention_2 needs the flash-attn package, which is not installed "
                                 "(pip install flash-attn); the default sdpa attention needs nothing more")
    if assistant_model_path and batch_size != 1:
        raise TranscriptionError("speculative decoding (assistant_model_path) works with batch_size 1 only")


class TransformersTranscriber(Transcriber):
    backend = "transformers"
    unsupported = ("word_timestamps", "vad_filter", "short_window")

    def __init__(self, model_path: str, use_gpu: bool = False, batch_size: int = 1,
                 attn_implementation: str = "sdpa", use_compile: bool = False,
                 assistant_model_path: Optional[str] = None, local_files_only: bool = True,
                 compute_type: Optional[str] = None, cpu_threads: int = 0, use_int8: bool = False):
        import torch

        check_options(use_gpu=use_gpu, batch_size=batch_size, attn_implementation=attn_implementation,
                      assistant_model_path=assistant_model_path, compute_type=compute_type,
                      cpu_threads=cpu_threads, use_int8=use_int8)
        check_model_dir(model_path, ("config.json",), must_exist=local_files_only)
        if cpu_threads:
            # Process-wide: torch has one intra-op pool (docs/performance.md: fewer threads than cores
            # can be faster on a CPU shared with other work).
            torch.set_num_threads(cpu_threads)
        self.device = torch.device("cuda:0" if use_gpu else "cpu")
        self.dtype = getattr(torch, compute_type) if compute_type else (torch.float16 if use_gpu else torch.float32)
        self.batch_size = batch_size
        if attn_implementation == "sdpa" and not use_gpu:
            attn_implementation = register_cpu_attention()
        load = dict(local_files_only=local_files_only, dtype=self.dtype, attn_implementation=attn_implementation)
        self.processor = load_processor(model_path, local_files_only=local_files_only)
        self.model = load_whisper(model_path, **load).to(self.device).eval()
        self.assistant = None
        if assistant_model_path:
            check_model_dir(assistant_model_path, ("config.json",), must_exist=local_files_only)
            self.assistant = load_whisper(assistant_model_path, **load).to(self.device).eval()
            from transformers import GenerationMixin

            # The assistant only drafts a few tokens per step. Whisper's own generate (long-form windows,
            # temperature fallback, no-speech rule) would get the main model's thresholds without its
            # temperatures and fail; the plain generate is what speculative decoding needs.
            self.assistant.generate = GenerationMixin.generate.__get__(self.assistant)
        if use_int8:
            self.model = quantize_linear_layers(self.model)
        EncoderOutputMemo(self.model.get_encoder())
        if use_compile:
            self.model.forward = torch.compile(self.model.forward)
        self.multilingual = model_is_multilingual(self.model)
        self.languages = model_languages(self.model.config.vocab_size)
        self.lang_to_id = self._language_ids()

    def _language_ids(self) -> dict:
        """<|xx|> -> token id of every language, as generate needs them in the generation config."""
        gen = self.model.generation_config
        lang_to_id = dict(getattr(gen, "lang_to_id", None) or {})
        if self.multilingual and not lang_to_id:
            # Some saved fine-tunes lose lang_to_id; the tokenizer still knows the tokens.
            tok = self.processor.tokenizer
            # Only the model's own languages: another one's token (yue of a 99-language model) is the
            # unknown token, <|endoftext|>.
            lang_to_id = {f"<|{c}|>": tok.convert_tokens_to_ids(f"<|{c}|>") for c in self.languages}
            gen.lang_to_id = lang_to_id
        return lang_to_id

    # -- language detection -------------------------------------------------------------
    def detect_language(self, features) -> tuple[str, float]:
        """Language of the first window and its probability, from the first decoder step."""
        import torch

        sot = self.model.generation_config.decoder_start_token_id
        with torch.inference_mode():
            encoded = self.model.get_encoder()(features[:1]).last_hidden_state
            logits = self.model(encoder_outputs=(encoded,),
                                decoder_input_ids=torch.tensor([[sot]], device=self.device)).logits[0, -1]
        tokens = list(self.lang_to_id.keys())
        ids = torch.tensor([self.lang_to_id[t] for t in tokens], device=self.device)
        probs = torch.softmax(logits[ids].float(), dim=-1)
        best = int(torch.argmax(probs))
        return tokens[best][2:-2], float(probs[best])

    def _features(self, pieces: list[np.ndarray]):
        longest = max(len(p) for p in pieces)
        if longest <= CHUNK_LENGTH * SAMPLE_RATE:
            inputs = self.processor.feature_extractor(
                pieces, sampling_rate=SAMPLE_RATE, return_tensors="pt", return_attention_mask=True)
        else:
            inputs = self.processor.feature_extractor(
                pieces, sampling_rate=SAMPLE_RATE, return_tensors="pt", truncation=False,
                padding="longest", return_attention_mask=True)
        return (inputs.input_features.to(self.device, self.dtype),
                inputs.attention_mask.to(self.device))

    # -- transcription ------------------------------------------------------------------
    def _transcribe(self, audio: np.ndarray, resolved: ResolvedOptions
                    ) -> tuple[Iterator[Segment], TranscriptionInfo]:
        duration = duration_of(audio)
        language, probability = resolved.language, None
        if language is None:
            first, _ = self._features([audio[:CHUNK_LENGTH * SAMPLE_RATE]])
            language, probability = self.detect_language(first)
        info = TranscriptionInfo(language=language, language_probability=probability, duration=duration)
        return self._segments(audio, resolved, language), info

    def _generate_kwargs(self, resolved: ResolvedOptions, language: str) -> dict:
        opts = resolved.options
        from transformers import StoppingCriteriaList

        # max_new_tokens overrides the generation config's max_length, so a smaller limit set
        # there (a fine-tune's config, a test) is kept.
        configured = self.model.generation_config.max_length or MAX_NEW_TOKENS_PER_WINDOW
        kwargs = dict(num_beams=opts.beam_size, condition_on_prev_tokens=False,
                      max_new_tokens=min(MAX_NEW_TOKENS_PER_WINDOW, configured),
                      stopping_criteria=StoppingCriteriaList([RepetitionLoopStop()]))
        temperatures = temperature_schedule(opts)
        if len(temperatures) > 1:
            # Whisper's fallback: a window whose tokens compress too well (a repetition loop) or
            # whose average log-probability is below -1 is decoded again one temperature higher.
            # transformers measures compression on token bytes, where 1.35 plays the role of
            # OpenAI's 2.4 on text (its documented value).
            kwargs.update(temperature=temperatures, compression_ratio_threshold=1.35, logprob_threshold=-1.0)
        else:
            # Whisper's generate derives do_sample from the temperature (0 = greedy or beam search).
            kwargs.update(temperature=temperatures[0])
        if opts.timestamps:
            # OpenAI's (and faster-whisper's) no-speech rule: a window whose no-speech probability
            # is high and whose text is unlikely is silence, not a hallucinated " you".
            kwargs.update(no_speech_threshold=0.6, logprob_threshold=-1.0)
        if self.multilingual:
            kwargs.update(language=language, task=resolved.task)
        if opts.initial_prompt:
            tokenizer = self.processor.tokenizer
            prompt = fit_prompt(opts.initial_prompt,
                                lambda text: tokenizer(text, add_special_tokens=False).input_ids, tokenizer.decode)
            kwargs["prompt_ids"] = self.processor.get_prompt_ids(prompt, return_tensors="pt").to(self.device)
        if self.assistant is not None:
            kwargs["assistant_model"] = self.assistant
        return kwargs

    def decoded_text(self, tokens: list[int]) -> str:
        """Whisper's text for a segment's tokens as the decoder wrote it (with its leading space)."""
        return self.processor.tokenizer.decode(tokens, skip_special_tokens=True)

    def _segments(self, audio: np.ndarray, resolved: ResolvedOptions, language: str) -> Iterator[Segment]:
        import torch

        timestamps = resolved.options.timestamps
        piece_seconds = SEQUENTIAL_PIECE_SECONDS if (self.batch_size == 1 and timestamps) else CHUNK_LENGTH
        bounds = split_at_quiet_points(audio, piece_seconds)
        kwargs = self._generate_kwargs(resolved, language)
        schedule = temperature_schedule(resolved.options)
        fixed_temperature = schedule[0] if len(schedule) == 1 else None
        tokenizer = self.processor.tokenizer
        last_end = 0.0
        # A digitally silent piece is not decoded: Whisper tends to hallucinate " you" there and
        # transformers' no-speech rule keeps it (confident text, avg log-prob above -1).
        bounds = [(s, e) for s, e in bounds if not is_silent(audio[s:e])]
        for first in range(0, len(bounds), self.batch_size):
            batch = bounds[first:first + self.batch_size]
            features, mask = self._features([audio[s:e] for s, e in batch])
            with torch.inference_mode():
                out = self.model.generate(features, attention_mask=mask, return_timestamps=timestamps,
                                          return_segments=timestamps, **kwargs)
            for i, (s, e) in enumerate(batch):
                offset, piece_end = s / SAMPLE_RATE, e / SAMPLE_RATE
                if not timestamps:
                    sequences = out["sequences"] if isinstance(out, dict) else out
                    text = tokenizer.decode(sequences[i], skip_special_tokens=True).strip()
                    if text:
                        yield Segment(start=round(offset, 3), end=round(piece_end, 3), text=text)
                        last_end = piece_end
                    continue
                for seg in out["segments"][i]:
                    text = tokenizer.decode(seg["tokens"], skip_special_tokens=True).strip()
                    if not text:
                        continue
                    # Generate's times are relative to the piece; clamp so that times never go
                    # backwards or past the piece even when the model predicts odd timestamps.
                    start = min(max(offset + float(seg["start"]), last_end), piece_end)
                    end = min(max(offset + float(seg["end"]), start), piece_end)
                    last_end = end
                    # generate reports a segment's tokens, but not its window, scores or fallback
                    # temperature: the temperature is known only when there was no fallback.
                    yield Segment(start=round(start, 3), end=round(end, 3), text=text,
                                  tokens=[int(t) for t in seg["tokens"]], temperature=fixed_temperature)
