"""Speech synthesized with espeak-ng from text lines, 16 kHz, with exact clause-level timestamps.

Each line is split into clauses at punctuation; every clause is synthesized on its own and
the pieces are concatenated with short pauses, so the clause times in `sentences` are exact
(no forced alignment needed). Mandarin goes to espeak-ng as pinyin with tone numbers
(voice cmn-latn-pinyin), because its character reader mispronounces much of the text.
The shipped sample corpus (dataset/) is `build_sample_corpus` with its defaults.
"""
from __future__ import annotations

import io
import itertools
import os
import random
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from utils import REPO_ROOT
from utils.core.audio import SAMPLE_RATE, TIME_PRECISION, resample
from utils.core.files import write_text_atomic
from utils.data.builders.common import BuildError, write_audio
from utils.data.builders.manifest_writer import ManifestWriter, make_record, manifest_audio_path

GRID = int(round(TIME_PRECISION * SAMPLE_RATE))  # samples per 0.02 s timestamp step
MAX_CLIP_SECONDS = 30.0                           # one Whisper window

VOICE_BASES = {"Chinese": "cmn-latn-pinyin", "English": "en-us"}
# Punctuation that ends a clause (split point) and punctuation kept in the text only.
CLAUSE_END = {"Chinese": "，。！？；：", "English": ",.;:!?"}
ZH_INNER_PAUSE = "、"
ZH_SILENT_PUNCT = "“”‘’《》（）—…·「」"
# The original project's example sentence (New Year money replaced by books), our wording.
TEST_WAV_SENTENCE = "近几年，我不但用书给女儿压岁，也劝说亲朋好友不要给女儿压岁钱，而是改送压岁书。"

# The shipped sample corpus. Test voice settings are combinations never used in training,
# and test sentences never appear in training, so the test CER measures generalisation.
CORPUS_DIR = os.path.join(REPO_ROOT, "dataset")
SENTENCES_ZH = os.path.join(REPO_ROOT, "tools", "sentences_zh.txt")
SENTENCES_EN = os.path.join(REPO_ROOT, "tools", "sentences_en.txt")
CORPUS_NUM_TEST = 50
CORPUS_NUM_LONG = 36      # about 3 minutes of test_long.wav
CORPUS_SEED = 2024
ZH_VARIANTS = ["m1", "m2", "m3", "m4", "m7", "f1", "f2", "f3", "f4", "f5"]
ZH_RATES = [150, 175, 200, 225]
ZH_PITCHES = [35, 50, 65]
EN_VARIANTS = ["", "m3", "f2", "f4"]
CORPUS_BITS = 11
CORPUS_CLIP_SECONDS = (2.0, 8.0)


@dataclass(frozen=True)
class VoiceSetting:
    variant: str   # espeak-ng variant (m1..m7, f1..f5, ...) or "" for the base voice
    rate: int      # words (pinyin syllables) per minute
    pitch: int     # 0-99

    def voice(self, language: str) -> str:
        base = VOICE_BASES[language]
        return f"{base}+{self.variant}" if self.variant else base

    def __str__(self) -> str:
        return f"{self.variant or 'default'}/s{self.rate}/p{self.pitch}"


# --------------------------------------------------------------------------- commands

def make_clips(text_file: str, output_dir: str, manifest: str, language: str = "Chinese",
               variants: str = "m1,m3,f2,f4", rates: str = "140,170", pitches: str = "40,60", seed: int = 0,
               prefix: str = "clip", audio_format: str = "flac", bits: int = 16, no_speech: int = 0) -> str:
    """One clip per line of `text_file` (+ `no_speech` no-speech clips) and their manifest."""
    lines = read_lines(text_file, language)
    settings = parse_settings(variants, rates, pitches)
    result = synthesize_clips(lines, settings, language, output_dir, manifest, prefix, audio_format,
                              random.Random(seed), no_speech_clips=no_speech, bits=bits)
    return f"summary: {result['clips']} clips, {result['seconds']:.1f} s of audio -> {manifest}"


def make_long(text_file: str, output: str, reference: Optional[str] = None, language: str = "Chinese",
              variants: str = "m3,f2,m1,f4", rates: str = "145,170", pitches: str = "45,60", seed: int = 0) -> str:
    """All lines of `text_file` in one recording, and the reference text beside it."""
    lines = read_lines(text_file, language)
    settings = parse_settings(variants, rates, pitches)
    random.Random(seed).shuffle(settings)
    reference = reference or os.path.splitext(output)[0] + ".txt"
    seconds = synthesize_long(lines, settings, language, output, reference, random.Random(seed))
    return f"summary: {len(lines)} lines, {seconds:.1f} s -> {output}, text -> {reference}"


def build_sample_corpus(output_dir: str = CORPUS_DIR, sentences_zh: str = SENTENCES_ZH,
                        sentences_en: str = SENTENCES_EN, num_test: int = CORPUS_NUM_TEST,
                        num_long: int = CORPUS_NUM_LONG, no_speech_train: int = 6, no_speech_test: int = 2,
                        seed: int = CORPUS_SEED) -> str:
    """The sample corpus of dataset/: zh_train/zh_test/en_test.jsonl with audio/, test.wav and
    test_long.wav with their texts. Deterministic for one espeak-ng version."""
    rng = random.Random(seed)
    zh = read_lines(sentences_zh, "Chinese")
    en = read_lines(sentences_en, "English")
    audio_dir = os.path.join(output_dir, "audio")
    (train_lines, test_lines, long_lines), (train_combos, test_combos) = split_corpus(zh, num_test, num_long, rng)

    summary = {}
    for name, lines, combos, no_speech in [("zh_train", train_lines, train_combos, no_speech_train),
                                           ("zh_test", test_lines, test_combos, no_speech_test)]:
        summary[name] = synthesize_clips(
            lines, combos, "Chinese", audio_dir, os.path.join(output_dir, f"{name}.jsonl"), name, "flac", rng,
            no_speech_clips=no_speech, bits=CORPUS_BITS, clip_seconds=CORPUS_CLIP_SECONDS)
    en_settings = [VoiceSetting(v, r, p) for v, r, p in itertools.product(EN_VARIANTS, [150, 170], [45, 60])]
    summary["en_test"] = synthesize_clips(
        en, en_settings, "English", audio_dir, os.path.join(output_dir, "en_test.jsonl"), "en_test",
        "flac", rng, bits=CORPUS_BITS)

    # test.wav: one clear default-voice reading, as a first thing to transcribe.
    audio, _ = synthesize_line(TEST_WAV_SENTENCE, VoiceSetting("", 150, 50), "Chinese", random.Random(seed))
    write_audio(os.path.join(output_dir, "test.wav"), audio)
    write_text_atomic(os.path.join(output_dir, "test.txt"), TEST_WAV_SENTENCE + "\n")
    summary["test.wav"] = {"clips": 1, "seconds": len(audio) / SAMPLE_RATE}

    long_settings = [VoiceSetting("m3", 150, 45), VoiceSetting("f2", 165, 60), VoiceSetting("m1", 140, 40),
                     VoiceSetting("f4", 175, 55), VoiceSetting("m7", 160, 50)]
    seconds = synthesize_long(long_lines, long_settings, "Chinese", os.path.join(output_dir, "test_long.wav"),
                              os.path.join(output_dir, "test_long.txt"), rng)
    summary["test_long.wav"] = {"clips": 1, "seconds": seconds}
    return "summary: " + "; ".join(f"{name} {s['clips']} clips {s['seconds']:.1f} s" for name, s in summary.items())


def build_more_train(output_dir: str, manifest: str, readings: int = 2, prefix: str = "zh_train_more",
                     voice_seed: int = 1, sentences_zh: str = SENTENCES_ZH, num_test: int = CORPUS_NUM_TEST,
                     num_long: int = CORPUS_NUM_LONG, seed: int = CORPUS_SEED) -> str:
    """More readings of the sample corpus's Mandarin training sentences, each with a voice setting
    drawn from the training split's settings: more acoustic variety for training, while the test
    split's sentences and voice settings stay unseen (the split is recomputed from the same seed)."""
    zh = read_lines(sentences_zh, "Chinese")
    (train_lines, _, _), (train_combos, _) = split_corpus(zh, num_test, num_long, random.Random(seed))
    result = synthesize_clips(list(train_lines) * readings, train_combos, "Chinese", output_dir, manifest,
                              prefix, "flac", random.Random(voice_seed), bits=CORPUS_BITS,
                              clip_seconds=CORPUS_CLIP_SECONDS)
    return (f"summary: {result['clips']} clips ({len(train_lines)} training sentences x {readings}), "
            f"{result['seconds']:.1f} s of audio -> {manifest}")


def split_corpus(lines: Sequence[str], num_test: int, num_long: int, rng: random.Random):
    """(train, test, long) lines and (train, test) voice settings, disjoint pairwise."""
    order = list(range(len(lines)))
    rng.shuffle(order)
    test_lines = [lines[i] for i in order[:num_test]]
    long_lines = [lines[i] for i in order[num_test:num_test + num_long]]
    train_lines = [lines[i] for i in order[num_test + num_long:]]
    if len(train_lines) < 10:
        raise BuildError(f"{len(lines)} sentences leave too few for training after "
                         f"{num_test} test and {num_long} long-file lines")
    combos = [VoiceSetting(v, r, p) for v, r, p in itertools.product(ZH_VARIANTS, ZH_RATES, ZH_PITCHES)]
    rng.shuffle(combos)
    test_combos = combos[:len(combos) // 5]
    train_combos = combos[len(combos) // 5:]
    return (train_lines, test_lines, long_lines), (train_combos, test_combos)


# --------------------------------------------------------------------------- text

def split_clauses(text: str, language: str) -> List[str]:
    """Clauses with their closing punctuation attached, as the original data's `sentences`."""
    ends = re.escape(CLAUSE_END[language])
    if language == "English":
        # A comma inside a number ("3,000") is not a clause end: require a following space.
        parts = re.findall(rf".+?(?:[{ends}](?=\s|$)|$)", text)
    else:
        parts = re.findall(rf".+?(?:[{ends}]+|$)", text)
    return [p.strip() for p in parts if p.strip()]


def to_espeak_text(clause: str, language: str) -> str:
    """What espeak-ng is fed: pinyin with tone numbers (neutral tone 5) for Mandarin."""
    if language == "English":
        return clause
    from pypinyin import Style, lazy_pinyin

    syllables = []
    for token in lazy_pinyin(clause, style=Style.TONE3, neutral_tone_with_five=True,
                             errors=lambda chars: [c for c in chars]):
        if re.fullmatch(r"[a-zü]+[1-5]", token):
            syllables.append(token.replace("ü", "v"))
        elif token in ZH_INNER_PAUSE:
            syllables.append(",")
        elif token in CLAUSE_END["Chinese"] or token in ZH_SILENT_PUNCT or token.isspace():
            continue
        else:
            raise BuildError(f"character {token!r} has no pinyin; write numbers and "
                             "Latin letters out in Chinese characters")
    return " ".join(syllables)


def read_lines(path: str, language: str) -> List[str]:
    """Non-empty lines; '#' starts a comment line. Errors name the file and line."""
    if not os.path.isfile(path):
        raise BuildError(f"{path}: text file not found")
    lines = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                for clause in split_clauses(line, language):
                    if not re.search(r"\w", to_espeak_text(clause, language)):
                        raise BuildError(f"clause {clause!r} has nothing to speak")
            except BuildError as exc:
                raise BuildError(f"{path}, line {number}: {exc}") from None
            lines.append(line)
    if not lines:
        raise BuildError(f"{path}: no text lines")
    return lines


# --------------------------------------------------------------------------- voices

def require_espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise BuildError("espeak-ng is not installed (Debian/Ubuntu: sudo apt-get install "
                         "espeak-ng); the shipped dataset/ files need no espeak-ng")
    return exe


def parse_settings(variants: str, rates: str, pitches: str) -> List[VoiceSetting]:
    """Every combination of the comma lists `variants` x `rates` x `pitches`."""
    names = [v.strip() for v in variants.split(",")]
    # espeak-ng silently ignores an unknown variant, so a typo would go unnoticed.
    listing = subprocess.run([require_espeak(), "--voices=variant"], capture_output=True,
                             text=True).stdout.splitlines()[1:]
    known = {line.split()[-1].split("/")[-1] for line in listing if line.split()}
    unknown = [v for v in names if v not in ("", "default") and v not in known]
    if unknown:
        raise BuildError(f"--variants: unknown espeak-ng variant(s) {', '.join(unknown)}; "
                         "`espeak-ng --voices=variant` lists them (File column, after !v/)")
    return [VoiceSetting("" if v in ("", "default") else v, r, p)
            for v, r, p in itertools.product(names, _int_list(rates, "rates", 80, 450),
                                             _int_list(pitches, "pitches", 0, 99))]


def _int_list(text: str, name: str, low: int, high: int) -> List[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BuildError(f"--{name}={text}: expected comma-separated integers") from None
    if not values or any(not low <= v <= high for v in values):
        raise BuildError(f"--{name}={text}: values must lie in {low}..{high}")
    return values


# --------------------------------------------------------------------------- audio

def espeak(text: str, setting: VoiceSetting, language: str) -> np.ndarray:
    import soundfile

    cmd = [require_espeak(), "-v", setting.voice(language), "-s", str(setting.rate),
           "-p", str(setting.pitch), "--stdout", text]
    result = subprocess.run(cmd, capture_output=True, check=False)
    if result.returncode != 0 or not result.stdout:
        raise BuildError(f"espeak-ng failed for voice {setting.voice(language)}: "
                         f"{result.stderr.decode(errors='replace').strip()}")
    audio, rate = soundfile.read(io.BytesIO(result.stdout), dtype="float32")
    return resample(audio, rate, SAMPLE_RATE)


def trim_silence(audio: np.ndarray, threshold: float = 0.01, margin: int = GRID) -> np.ndarray:
    """espeak-ng pads every utterance with silence; cut it so our own pauses set the rhythm."""
    loud = np.flatnonzero(np.abs(audio) > threshold * max(float(np.abs(audio).max()), 1e-9))
    if loud.size == 0:
        return audio[:0]
    return audio[max(loud[0] - margin, 0):loud[-1] + margin]


def pad_to_grid(audio: np.ndarray) -> np.ndarray:
    """Whole 0.02 s steps, so every clause boundary falls exactly on a timestamp token."""
    extra = (-len(audio)) % GRID
    return np.concatenate([audio, np.zeros(extra, np.float32)]) if extra else audio


def silence(rng: random.Random, low: float, high: float) -> np.ndarray:
    steps = int(round(rng.uniform(low, high) / TIME_PRECISION))
    return np.zeros(steps * GRID, np.float32)


def synthesize_line(text: str, setting: VoiceSetting, language: str, rng: random.Random,
                    lead: Tuple[float, float] = (0.1, 0.4),
                    pause: Tuple[float, float] = (0.12, 0.36),
                    tail: Tuple[float, float] = (0.2, 0.5)) -> Tuple[np.ndarray, List[dict]]:
    """Audio of one line and its clause timestamps (seconds, on the 0.02 s grid)."""
    pieces = [silence(rng, *lead)]
    position = len(pieces[0])
    sentences = []
    clauses = split_clauses(text, language)
    for index, clause in enumerate(clauses):
        audio = pad_to_grid(trim_silence(espeak(to_espeak_text(clause, language), setting, language)))
        sentences.append({"start": position / SAMPLE_RATE,
                          "end": (position + len(audio)) / SAMPLE_RATE, "text": clause})
        pieces.append(audio)
        position += len(audio)
        gap = silence(rng, *(pause if index < len(clauses) - 1 else tail))
        pieces.append(gap)
        position += len(gap)
    audio = np.concatenate(pieces)
    # Level varies per line like real recordings; peak stays well below clipping.
    audio *= rng.uniform(0.3, 0.65) / max(float(np.abs(audio).max()), 1e-9)
    return audio.astype(np.float32), sentences


def no_speech(seconds: float, rng: random.Random) -> np.ndarray:
    """Room tone for no-speech samples: digital silence, faint hiss, or hiss with mains hum."""
    n = int(round(seconds / TIME_PRECISION)) * GRID
    noise = np.random.default_rng(rng.randrange(2 ** 32))
    kind = rng.choice(["silence", "hiss", "hum"])
    if kind == "silence":
        return np.zeros(n, np.float32)
    audio = noise.normal(0.0, rng.uniform(0.0008, 0.003), n)
    if kind == "hum":
        t = np.arange(n) / SAMPLE_RATE
        audio += rng.uniform(0.002, 0.006) * np.sin(2 * np.pi * rng.choice([50, 60]) * t)
    return audio.astype(np.float32)


def fitted_line(line: str, setting: VoiceSetting, settings: Sequence[VoiceSetting], language: str,
                rng: random.Random, clip_seconds: Tuple[float, float]) -> Tuple[np.ndarray, List[dict]]:
    """synthesize_line within `clip_seconds`: a clip too long is read again at the fastest rate of
    its voice; one too short gets trailing silence, which leaves the clause times unchanged."""
    audio, sentences = synthesize_line(line, setting, language, rng)
    if len(audio) > clip_seconds[1] * SAMPLE_RATE:
        setting = max((s for s in settings if s.variant == setting.variant),
                      key=lambda s: (s.rate, s.pitch == setting.pitch))
        audio, sentences = synthesize_line(line, setting, language, rng)
    short = int(clip_seconds[0] * SAMPLE_RATE) - len(audio)
    if short > 0:
        audio = np.concatenate([audio, np.zeros(short + (-short) % GRID, np.float32)])
    return audio, sentences


def synthesize_clips(lines: Sequence[str], settings: Sequence[VoiceSetting], language: str,
                     output_dir: str, manifest: str, prefix: str, audio_format: str,
                     rng: random.Random, no_speech_clips: int = 0, bits: int = 16,
                     clip_seconds: Tuple[float, float] = (0.0, MAX_CLIP_SECONDS)) -> dict:
    """One clip per line (voice setting drawn per line, fitted to `clip_seconds`) plus optional
    no-speech clips, and their manifest."""
    total = 0.0
    with ManifestWriter(manifest) as writer:
        for index, line in enumerate(tqdm(lines, desc=prefix, unit="clip"), 1):
            audio, sentences = fitted_line(line, rng.choice(list(settings)), settings, language, rng, clip_seconds)
            duration = len(audio) / SAMPLE_RATE
            if duration > MAX_CLIP_SECONDS:
                raise BuildError(f"line {index} ({line[:20]}...) gives {duration:.1f} s of speech, over "
                                 f"Whisper's {MAX_CLIP_SECONDS:.0f} s window: split it into shorter lines")
            path = os.path.join(output_dir, f"{prefix}_{index:04d}.{audio_format}")
            write_audio(path, audio, bits)
            writer.write(make_record(manifest_audio_path(path), line, duration, sentences, language))
            total += duration
        for index in range(1, no_speech_clips + 1):
            duration = int(round(rng.uniform(2.0, 5.0) / TIME_PRECISION)) * TIME_PRECISION
            path = os.path.join(output_dir, f"{prefix}_nospeech_{index:02d}.{audio_format}")
            audio = no_speech(duration, rng)
            write_audio(path, audio, bits)
            writer.write(make_record(manifest_audio_path(path), "", len(audio) / SAMPLE_RATE, [], language))
            total += len(audio) / SAMPLE_RATE
    return {"clips": len(lines) + no_speech_clips, "seconds": total}


def synthesize_long(lines: Sequence[str], settings: Sequence[VoiceSetting], language: str,
                    output: str, reference: str, rng: random.Random) -> float:
    """All lines in one recording; the voice changes every few lines like turns in a talk."""
    pieces, setting = [], settings[0]
    for index, line in enumerate(tqdm(lines, desc=os.path.basename(output), unit="line")):
        if index % 4 == 0:
            setting = settings[(index // 4) % len(settings)]
        audio, _ = synthesize_line(line, setting, language, rng, tail=(0.4, 0.9))
        pieces.append(audio)
    audio = np.concatenate(pieces)
    write_audio(output, audio)
    write_text_atomic(reference, "\n".join(lines) + "\n")
    return len(audio) / SAMPLE_RATE
