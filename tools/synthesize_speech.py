"""Text lines -> speech with espeak-ng, resampled to 16 kHz, with clause-level timestamps.

Each line is split into clauses at punctuation; every clause is synthesized on its own and
the pieces are concatenated with short pauses, so the clause times in `sentences` are exact
(no forced alignment needed). Mandarin goes to espeak-ng as pinyin with tone numbers
(voice cmn-latn-pinyin), because its character reader mispronounces much of the text.

  clips          one clip per line -> audio files + a jsonlines manifest
  long           all lines into one recording (several voices and rates) + reference text
  sample-corpus  regenerate the sample data shipped in dataset/ (deterministic, seeded)

Examples:
  python tools/synthesize_speech.py clips --text_file=tools/sentences_en.txt \
      --language=English --output_dir=data/en --manifest=data/en.jsonl
  python tools/synthesize_speech.py sample-corpus --output_dir=dataset
"""
from __future__ import annotations

import argparse
import io
import itertools
import os
import random
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.core.audio import SAMPLE_RATE, TIME_PRECISION, resample, save_wav  # noqa: E402
from utils.data.manifest_writer import ManifestWriter, make_record, manifest_audio_path, write_text_atomic  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRID = int(round(TIME_PRECISION * SAMPLE_RATE))  # samples per 0.02 s timestamp step
MAX_CLIP_SECONDS = 30.0                           # one Whisper window

VOICE_BASES = {"Chinese": "cmn-latn-pinyin", "English": "en-us"}
# Punctuation that ends a clause (split point) and punctuation kept in the text only.
CLAUSE_END = {"Chinese": "，。！？；：", "English": ",.;:!?"}
ZH_INNER_PAUSE = "、"
ZH_SILENT_PUNCT = "“”‘’《》（）—…·「」"
# The original project's example sentence (New Year money replaced by books), our wording.
TEST_WAV_SENTENCE = "近几年，我不但用书给女儿压岁，也劝说亲朋好友不要给女儿压岁钱，而是改送压岁书。"


class SynthesisError(ValueError):
    """Input text that cannot be spoken; the message names the file and line."""


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
            raise SynthesisError(f"character {token!r} has no pinyin; write numbers and "
                                 "Latin letters out in Chinese characters")
    return " ".join(syllables)


def read_lines(path: str, language: str) -> List[str]:
    """Non-empty lines; '#' starts a comment line. Errors name the file and line."""
    if not os.path.isfile(path):
        raise SynthesisError(f"{path}: text file not found")
    lines = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                for clause in split_clauses(line, language):
                    if not re.search(r"\w", to_espeak_text(clause, language)):
                        raise SynthesisError(f"clause {clause!r} has nothing to speak")
            except SynthesisError as exc:
                raise SynthesisError(f"{path}, line {number}: {exc}") from None
            lines.append(line)
    if not lines:
        raise SynthesisError(f"{path}: no text lines")
    return lines


# --------------------------------------------------------------------------- audio

def require_espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SynthesisError("espeak-ng is not installed (Debian/Ubuntu: sudo apt-get install "
                             "espeak-ng); the shipped dataset/ files need no espeak-ng")
    return exe


def espeak(text: str, setting: VoiceSetting, language: str) -> np.ndarray:
    import soundfile

    cmd = [require_espeak(), "-v", setting.voice(language), "-s", str(setting.rate),
           "-p", str(setting.pitch), "--stdout", text]
    result = subprocess.run(cmd, capture_output=True, check=False)
    if result.returncode != 0 or not result.stdout:
        raise SynthesisError(f"espeak-ng failed for voice {setting.voice(language)}: "
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
        audio = pad_to_grid(trim_silence(espeak(to_espeak_text(clause, language), setting,
                                                language)))
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


def write_audio(path: str, audio: np.ndarray, bits: int = 16) -> None:
    """FLAC for .flac paths, 16-bit WAV otherwise; both written beside, then renamed.

    `bits` < 16 rounds the samples to that resolution inside the 16-bit container: FLAC
    stores the unused low bits for free, so 11 bits (about 45 dB SNR at our levels, far
    above what recognition needs) makes the shipped corpus about a third smaller.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if bits < 16:
        step = 2.0 ** (bits - 1)
        audio = np.round(audio * step) / step
    if path.endswith(".flac"):
        import soundfile

        tmp = f"{path}.part"
        soundfile.write(tmp, np.clip(audio, -1.0, 1.0), SAMPLE_RATE, format="FLAC",
                        subtype="PCM_16")
        os.replace(tmp, path)
    else:
        save_wav(path, audio)


# --------------------------------------------------------------------------- commands

def synthesize_clips(lines: Sequence[str], settings: Sequence[VoiceSetting], language: str,
                     output_dir: str, manifest: str, prefix: str, audio_format: str,
                     rng: random.Random, no_speech_clips: int = 0, bits: int = 16,
                     clip_seconds: Tuple[float, float] = (0.0, MAX_CLIP_SECONDS)) -> dict:
    """One clip per line (voice setting drawn per line) plus optional no-speech clips.

    A clip longer than clip_seconds[1] is read again at the fastest rate of its voice;
    one shorter than clip_seconds[0] gets trailing silence."""
    from tqdm import tqdm

    total = 0.0
    with ManifestWriter(manifest) as writer:
        for index, line in enumerate(tqdm(lines, desc=prefix, unit="clip"), 1):
            setting = rng.choice(list(settings))
            audio, sentences = synthesize_line(line, setting, language, rng)
            # Too long for the wanted range: the fastest allowed setting of the same voice.
            if len(audio) > clip_seconds[1] * SAMPLE_RATE:
                setting = max((s for s in settings if s.variant == setting.variant),
                              key=lambda s: (s.rate, s.pitch == setting.pitch))
                audio, sentences = synthesize_line(line, setting, language, rng)
            # Too short: more trailing silence, which leaves the clause times unchanged.
            short = int(clip_seconds[0] * SAMPLE_RATE) - len(audio)
            if short > 0:
                audio = np.concatenate([audio, np.zeros(short + (-short) % GRID, np.float32)])
            duration = len(audio) / SAMPLE_RATE
            if duration > MAX_CLIP_SECONDS:
                raise SynthesisError(f"line {index} ({line[:20]}...) gives {duration:.1f} s of "
                                     f"speech, over Whisper's {MAX_CLIP_SECONDS:.0f} s window: "
                                     "split it into shorter lines")
            path = os.path.join(output_dir, f"{prefix}_{index:04d}.{audio_format}")
            write_audio(path, audio, bits)
            writer.write(make_record(manifest_audio_path(path), line, duration, sentences,
                                     language))
            total += duration
        for index in range(1, no_speech_clips + 1):
            duration = int(round(rng.uniform(2.0, 5.0) / TIME_PRECISION)) * TIME_PRECISION
            path = os.path.join(output_dir, f"{prefix}_nospeech_{index:02d}.{audio_format}")
            audio = no_speech(duration, rng)
            write_audio(path, audio, bits)
            writer.write(make_record(manifest_audio_path(path), "", len(audio) / SAMPLE_RATE,
                                     [], language))
            total += len(audio) / SAMPLE_RATE
    return {"clips": len(lines) + no_speech_clips, "seconds": total}


def synthesize_long(lines: Sequence[str], settings: Sequence[VoiceSetting], language: str,
                    output: str, reference: str, rng: random.Random) -> float:
    """All lines in one recording; the voice changes every few lines like turns in a talk."""
    from tqdm import tqdm

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


def parse_settings(variants: str, rates: str, pitches: str) -> List[VoiceSetting]:
    def ints(text: str, name: str, low: int, high: int) -> List[int]:
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise SynthesisError(f"--{name}={text}: expected comma-separated integers") from None
        if not values or any(not low <= v <= high for v in values):
            raise SynthesisError(f"--{name}={text}: values must lie in {low}..{high}")
        return values

    names = [v.strip() for v in variants.split(",")]
    # espeak-ng silently ignores an unknown variant, so a typo would go unnoticed.
    listing = subprocess.run([require_espeak(), "--voices=variant"], capture_output=True,
                             text=True).stdout.splitlines()[1:]
    known = {line.split()[-1].split("/")[-1] for line in listing if line.split()}
    unknown = [v for v in names if v not in ("", "default") and v not in known]
    if unknown:
        raise SynthesisError(f"--variants: unknown espeak-ng variant(s) {', '.join(unknown)}; "
                             "`espeak-ng --voices=variant` lists them (File column, after !v/)")
    return [VoiceSetting("" if v in ("", "default") else v, r, p)
            for v, r, p in itertools.product(names, ints(rates, "rates", 80, 450),
                                             ints(pitches, "pitches", 0, 99))]


# The shipped sample corpus. Test voice settings are combinations never used in training,
# and test sentences never appear in training, so the test CER measures generalisation.
ZH_VARIANTS = ["m1", "m2", "m3", "m4", "m7", "f1", "f2", "f3", "f4", "f5"]
ZH_RATES = [150, 175, 200, 225]
CORPUS_BITS = 11
CORPUS_CLIP_SECONDS = (2.0, 8.0)
ZH_PITCHES = [35, 50, 65]
EN_VARIANTS = ["", "m3", "f2", "f4"]


def split_corpus(lines: Sequence[str], num_test: int, num_long: int, rng: random.Random):
    """(train, test, long) lines and (train, test) voice settings, disjoint pairwise."""
    order = list(range(len(lines)))
    rng.shuffle(order)
    test_lines = [lines[i] for i in order[:num_test]]
    long_lines = [lines[i] for i in order[num_test:num_test + num_long]]
    train_lines = [lines[i] for i in order[num_test + num_long:]]
    if len(train_lines) < 10:
        raise SynthesisError(f"{len(lines)} sentences leave too few for training after "
                             f"{num_test} test and {num_long} long-file lines")
    combos = [VoiceSetting(v, r, p) for v, r, p in itertools.product(ZH_VARIANTS, ZH_RATES,
                                                                        ZH_PITCHES)]
    rng.shuffle(combos)
    test_combos = combos[:len(combos) // 5]
    train_combos = combos[len(combos) // 5:]
    return (train_lines, test_lines, long_lines), (train_combos, test_combos)


def build_sample_corpus(args) -> None:
    check_counts(args, "num_test", "num_long", "no_speech_train", "no_speech_test")
    rng = random.Random(args.seed)
    zh = read_lines(args.sentences_zh, "Chinese")
    en = read_lines(args.sentences_en, "English")
    out = args.output_dir
    audio_dir = os.path.join(out, "audio")
    (train_lines, test_lines, long_lines), (train_combos, test_combos) = split_corpus(
        zh, args.num_test, args.num_long, rng)

    summary = {}
    summary["zh_train"] = synthesize_clips(
        train_lines, train_combos, "Chinese", audio_dir, os.path.join(out, "zh_train.jsonl"),
        "zh_train", "flac", rng, no_speech_clips=args.no_speech_train, bits=CORPUS_BITS,
        clip_seconds=CORPUS_CLIP_SECONDS)
    summary["zh_test"] = synthesize_clips(
        test_lines, test_combos, "Chinese", audio_dir, os.path.join(out, "zh_test.jsonl"),
        "zh_test", "flac", rng, no_speech_clips=args.no_speech_test, bits=CORPUS_BITS,
        clip_seconds=CORPUS_CLIP_SECONDS)
    en_settings = [VoiceSetting(v, r, p) for v, r, p in itertools.product(EN_VARIANTS,
                                                                           [150, 170], [45, 60])]
    summary["en_test"] = synthesize_clips(
        en, en_settings, "English", audio_dir, os.path.join(out, "en_test.jsonl"), "en_test",
        "flac", rng, bits=CORPUS_BITS)

    # test.wav: one clear default-voice reading, as a first thing to transcribe.
    audio, _ = synthesize_line(TEST_WAV_SENTENCE, VoiceSetting("", 150, 50), "Chinese",
                               random.Random(args.seed))
    write_audio(os.path.join(out, "test.wav"), audio)
    write_text_atomic(os.path.join(out, "test.txt"), TEST_WAV_SENTENCE + "\n")
    summary["test.wav"] = {"clips": 1, "seconds": len(audio) / SAMPLE_RATE}

    long_settings = [VoiceSetting("m3", 150, 45), VoiceSetting("f2", 165, 60),
                     VoiceSetting("m1", 140, 40), VoiceSetting("f4", 175, 55),
                     VoiceSetting("m7", 160, 50)]
    seconds = synthesize_long(long_lines, long_settings, "Chinese",
                              os.path.join(out, "test_long.wav"),
                              os.path.join(out, "test_long.txt"), rng)
    summary["test_long.wav"] = {"clips": 1, "seconds": seconds}
    print("summary: " + "; ".join(f"{name} {s['clips']} clips {s['seconds']:.1f} s"
                                  for name, s in summary.items()))


def build_more_train(args) -> None:
    """More readings of the sample corpus's Mandarin training sentences, each with a voice setting
    drawn from the training split's settings: more acoustic variety for training, while the test
    split's sentences and voice settings stay unseen (the split is recomputed from the same seed)."""
    check_counts(args, "num_test", "num_long")
    if args.readings < 1:
        raise SynthesisError(f"--readings={args.readings}: must be at least 1")
    zh = read_lines(args.sentences_zh, "Chinese")
    (train_lines, _, _), (train_combos, _) = split_corpus(zh, args.num_test, args.num_long,
                                                          random.Random(args.seed))
    result = synthesize_clips(list(train_lines) * args.readings, train_combos, "Chinese",
                              args.output_dir, args.manifest, args.prefix, "flac",
                              random.Random(args.voice_seed), bits=CORPUS_BITS,
                              clip_seconds=CORPUS_CLIP_SECONDS)
    print(f"summary: {result['clips']} clips ({len(train_lines)} training sentences x "
          f"{args.readings}), {result['seconds']:.1f} s of audio -> {args.manifest}")


def check_counts(args, *names: str) -> None:
    for name in names:
        if getattr(args, name) < 0:
            raise SynthesisError(f"--{name}={getattr(args, name)}: must not be negative")


def run_clips(args) -> None:
    check_counts(args, "no_speech")
    lines = read_lines(args.text_file, args.language)
    settings = parse_settings(args.variants, args.rates, args.pitches)
    result = synthesize_clips(lines, settings, args.language, args.output_dir, args.manifest,
                              args.prefix, args.audio_format, random.Random(args.seed),
                              no_speech_clips=args.no_speech, bits=args.bits)
    print(f"summary: {result['clips']} clips, {result['seconds']:.1f} s of audio -> "
          f"{args.manifest}")


def run_long(args) -> None:
    lines = read_lines(args.text_file, args.language)
    settings = parse_settings(args.variants, args.rates, args.pitches)
    random.Random(args.seed).shuffle(settings)
    reference = args.reference or os.path.splitext(args.output)[0] + ".txt"
    seconds = synthesize_long(lines, settings, args.language, args.output, reference,
                              random.Random(args.seed))
    print(f"summary: {len(lines)} lines, {seconds:.1f} s -> {args.output}, text -> {reference}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def voice_args(p, variants: str, rates: str, pitches: str) -> None:
        p.add_argument("--text_file", required=True, help="UTF-8 text, one utterance per line; "
                       "'#' lines are comments. Mandarin in Chinese characters (no digits)")
        p.add_argument("--language", choices=sorted(VOICE_BASES), default="Chinese",
                       help="language of the text; also written to each manifest line")
        p.add_argument("--variants", default=variants, help="comma-separated espeak-ng voice "
                       "variants (see `espeak-ng --voices=variant`); 'default' = base voice")
        p.add_argument("--rates", default=rates, help="comma-separated speaking rates (espeak "
                       "-s, words per minute)")
        p.add_argument("--pitches", default=pitches, help="comma-separated pitches (0-99)")
        p.add_argument("--seed", type=int, default=0, help="seed for voice choice and pauses")

    clips = commands.add_parser("clips", help="one clip per line + a jsonlines manifest",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    voice_args(clips, "m1,m3,f2,f4", "140,170", "40,60")
    clips.add_argument("--output_dir", required=True, help="directory for the audio clips")
    clips.add_argument("--manifest", required=True, help="jsonlines file to write")
    clips.add_argument("--prefix", default="clip", help="clip file names: <prefix>_0001.<ext>")
    clips.add_argument("--audio_format", choices=["flac", "wav"], default="flac",
                       help="clip file format (16 kHz mono 16-bit)")
    clips.add_argument("--bits", type=int, choices=range(8, 17), default=16, metavar="8..16",
                       help="sample resolution kept (below 16 shrinks FLAC files)")
    clips.add_argument("--no_speech", type=int, default=0,
                       help="also write this many no-speech clips (sentence \"\")")
    clips.set_defaults(run=run_clips)

    long = commands.add_parser("long", help="all lines into one long recording",
                               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    voice_args(long, "m3,f2,m1,f4", "145,170", "45,60")
    long.add_argument("--output", required=True, help="audio file (.wav or .flac)")
    long.add_argument("--reference", default=None, help="reference text file, one line per "
                      "utterance (default: the output path with .txt)")
    long.set_defaults(run=run_long)

    corpus = commands.add_parser("sample-corpus", help="regenerate the sample data in dataset/",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    corpus.add_argument("--output_dir", default=os.path.join(REPO_ROOT, "dataset"),
                        help="where test.wav, test_long.wav, the jsonl files and audio/ go")
    corpus.add_argument("--sentences_zh", default=os.path.join(REPO_ROOT, "tools",
                                                               "sentences_zh.txt"),
                        help="Mandarin sentences, one per line")
    corpus.add_argument("--sentences_en", default=os.path.join(REPO_ROOT, "tools",
                                                               "sentences_en.txt"),
                        help="English sentences for en_test.jsonl")
    corpus.add_argument("--num_test", type=int, default=50, help="Mandarin test-split lines")
    corpus.add_argument("--num_long", type=int, default=36,
                        help="Mandarin lines read in test_long.wav (about 3 minutes)")
    corpus.add_argument("--no_speech_train", type=int, default=6,
                        help="no-speech clips in the training split")
    corpus.add_argument("--no_speech_test", type=int, default=2,
                        help="no-speech clips in the test split")
    corpus.add_argument("--seed", type=int, default=2024, help="seed for splits, voices, pauses")
    corpus.set_defaults(run=build_sample_corpus)

    more = commands.add_parser("more-train", help="more readings of the sample corpus's training "
                               "sentences, in training voices only",
                               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    more.add_argument("--output_dir", required=True, help="directory for the audio clips")
    more.add_argument("--manifest", required=True, help="jsonlines file to write")
    more.add_argument("--readings", type=int, default=2, help="readings of every training sentence")
    more.add_argument("--prefix", default="zh_train_more", help="clip file names: <prefix>_0001.flac")
    more.add_argument("--voice_seed", type=int, default=1, help="seed for the voices and pauses of "
                      "the new readings (the sample corpus used --seed)")
    for name in ("sentences_zh", "num_test", "num_long", "seed"):
        action = next(a for a in corpus._actions if a.dest == name)
        more.add_argument(f"--{name}", type=action.type, default=action.default,
                          help=f"as sample-corpus (must match it): {action.help}")
    more.set_defaults(run=build_more_train)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    print("configuration: " + ", ".join(f"{k}={v}" for k, v in vars(args).items()
                                        if k != "run"))
    try:
        args.run(args)
    except SynthesisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
