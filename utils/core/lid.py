"""Language identification the way Whisper does it, and its accuracy against a manifest's languages.

Whisper detects the language from the decoder's first step: after <|startoftranscript|> the next token is
the language token, so the softmax over the language tokens' logits at that step is the detection
(openai/whisper's detect_language, faster-whisper's detect_language). Evaluation reads it from the same
step as the no-speech probability, so detection costs one decoder step per batch and nothing else.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Sequence

from utils.core.languages import to_language_code


def language_token_ids(tokenizer, codes: Sequence[str]) -> dict[str, int]:
    """{code: id of <|code|>} for the codes the tokenizer has a token for."""
    vocabulary = tokenizer.get_vocab()
    return {code: vocabulary[f"<|{code}|>"] for code in codes if f"<|{code}|>" in vocabulary}


def first_step_logits(model, encoded):
    """Float logits [batch, vocab] of the token after <|startoftranscript|> (the language token's place)."""
    import torch

    hidden = encoded.last_hidden_state
    start = torch.full((hidden.shape[0], 1), model.generation_config.decoder_start_token_id, device=hidden.device)
    return model(encoder_outputs=encoded, decoder_input_ids=start).logits[:, -1].float()


@dataclass
class Detection:
    language: str           # detected code
    probability: float      # its probability among the language tokens
    reference_probability: Optional[float] = None   # probability of the expected language, when known


def detect_languages(logits, language_ids: dict[str, int], expected: Optional[Sequence[Optional[str]]] = None
                     ) -> list[Detection]:
    """The detection of every row of `logits` (first_step_logits), with the probability of each row's
    `expected` language code when given."""
    import torch

    codes = list(language_ids)
    probabilities = torch.softmax(logits[:, [language_ids[c] for c in codes]].float(), dim=-1).cpu()
    best = probabilities.argmax(dim=-1).tolist()
    detections = []
    for row, index in enumerate(best):
        want = expected[row] if expected is not None else None
        reference = float(probabilities[row, codes.index(want)]) if want in language_ids else None
        detections.append(Detection(codes[index], round(float(probabilities[row, index]), 4),
                                    None if reference is None else round(reference, 4)))
    return detections


@dataclass
class LidAccuracy:
    accuracy: Optional[float]           # share of scored clips whose detected language is the expected one
    correct: int
    clips: int                          # clips with speech and a known expected language
    mean_probability: Optional[float]   # mean probability of the detected language
    mean_reference_probability: Optional[float]  # mean probability of the expected language

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        if not self.clips:
            return "LID: not measured (no clip with speech and a known language, or an English-only model)"
        return (f"LID accuracy {self.accuracy:.3f} ({self.correct}/{self.clips}, mean p(detected) "
                f"{self.mean_probability:.2f}, mean p(expected) {self.mean_reference_probability:.2f})")


def lid_accuracy(detections: Sequence[Optional[Detection]], expected: Sequence[Optional[str]],
                 references: Sequence[str]) -> LidAccuracy:
    """Accuracy over the clips that hold speech (a non-empty reference) and have an expected language;
    no-speech clips have no language to find."""
    scored = [(d, to_language_code(e)) for d, e, r in zip(detections, expected, references)
              if d is not None and e and r.strip()]
    if not scored:
        return LidAccuracy(None, 0, 0, None, None)
    correct = sum(1 for d, e in scored if d.language == e)
    references_p = [d.reference_probability or 0.0 for d, _ in scored]
    return LidAccuracy(round(correct / len(scored), 4), correct, len(scored),
                       round(sum(d.probability for d, _ in scored) / len(scored), 4),
                       round(sum(references_p) / len(scored), 4))
