"""Error rates (CER/WER) for evaluation and for evaluation during training, on normalised text."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence, Union

from utils.core.text import CER_LANGUAGES, ScoringNormalizer, scoring_normalizer_name

__all__ = ["CER_LANGUAGES", "METRICS", "ErrorCounts", "ErrorRateResult", "count_errors", "error_rate"]

METRICS = ("cer", "wer")

# Characters of scripts written without spaces; a space beside one of them is not a word boundary.
_NO_SPACE_SCRIPT = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_SPACE_NEAR_CJK = re.compile(rf"(?<=[{_NO_SPACE_SCRIPT}])\s+|\s+(?=[{_NO_SPACE_SCRIPT}])")


@dataclass
class ErrorCounts:
    """Edit-distance counts over units (characters for CER, words for WER)."""
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    reference_units: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        if self.reference_units == 0:
            return 0.0 if self.errors == 0 else float("inf")
        return self.errors / self.reference_units

    def __iadd__(self, other: "ErrorCounts") -> "ErrorCounts":
        self.substitutions += other.substitutions
        self.deletions += other.deletions
        self.insertions += other.insertions
        self.reference_units += other.reference_units
        return self


def _units(text: str, metric: str) -> list[str]:
    return list(text) if metric == "cer" else text.split()


def _for_metric(text: str, metric: str) -> str:
    # Chinese/Japanese transcripts put spaces at random; for CER they are not characters of the sentence.
    return _SPACE_NEAR_CJK.sub("", text) if metric == "cer" else text


def count_errors(reference: str, hypothesis: str, metric: str) -> ErrorCounts:
    """Counts for one (already normalised) pair; an empty reference (no-speech clip) counts every output unit
    as an insertion, which jiwer refuses to score."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if not reference:
        return ErrorCounts(insertions=len(_units(hypothesis, metric)))
    import jiwer

    process = jiwer.process_characters if metric == "cer" else jiwer.process_words
    out = process(reference, hypothesis)
    return ErrorCounts(out.substitutions, out.deletions, out.insertions, out.hits + out.substitutions + out.deletions)


@dataclass
class ErrorRateResult:
    metric: str
    value: float
    counts: ErrorCounts
    utterances: list = field(default_factory=list)
    normalizer: str = ""

    def to_dict(self) -> dict:
        c = self.counts
        return {"metric": self.metric, "value": self.value, "normalizer": self.normalizer,
                "counts": {"utterances": len(self.utterances), **asdict(c), "errors": c.errors},
                "utterances": self.utterances}


def error_rate(references: Sequence[str], hypotheses: Sequence[str], metric: str = "cer", *,
               remove_pun: bool = True, to_simple: bool = True,
               language: Union[None, str, Sequence[Optional[str]]] = None, normalizer: str = "auto",
               english_spelling: Optional[dict] = None) -> ErrorRateResult:
    """Corpus-level CER/WER: total edits over total reference units (not a mean of per-utterance rates).

    Each pair is normalised by the normaliser of its language (one code for all, or one per utterance;
    utils.core.text.scoring_normalizer_name): Whisper's English/basic normaliser for space-delimited
    languages, punctuation-simplified (remove_pun, to_simple) for the others and for unknown ones;
    `normalizer` other than "auto" applies one to all. The result names the normaliser(s) used."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    languages = [language] * len(references) if language is None or isinstance(language, str) else list(language)
    normalizers: dict = {}
    total = ErrorCounts()
    details = []
    for i, (ref, hyp, code) in enumerate(zip(references, hypotheses, languages)):
        name = scoring_normalizer_name(code, normalizer)
        if name not in normalizers:
            normalizers[name] = ScoringNormalizer(name, english_spelling=english_spelling, remove_pun=remove_pun,
                                                  to_simple=to_simple)
        ref_n = _for_metric(normalizers[name](ref), metric)
        hyp_n = _for_metric(normalizers[name](hyp), metric)
        counts = count_errors(ref_n, hyp_n, metric)
        total += counts
        details.append({"index": i, "reference": ref, "hypothesis": hyp,
                        "reference_normalized": ref_n, "hypothesis_normalized": hyp_n,
                        "errors": counts.errors, "reference_units": counts.reference_units})
    return ErrorRateResult(metric, total.rate, total, details, "+".join(normalizers) or
                           scoring_normalizer_name(None, normalizer))
