"""Label sequences token by token (real whisper-base / tiny.en tokenizers) and the collator."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from utils.core.languages import to_language_code
from utils.data.collator import SpeechSeq2SeqCollator
from utils.data.labels import build_labels, decode_labels

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def processor(whisper_base_dir):
    from transformers import WhisperProcessor

    return WhisperProcessor.from_pretrained(whisper_base_dir)


@pytest.fixture(scope="module")
def whisper_base(whisper_base_dir):
    from transformers import WhisperForConditionalGeneration

    return WhisperForConditionalGeneration.from_pretrained(whisper_base_dir).eval()


@pytest.fixture(scope="module")
def tok(processor):
    return processor.tokenizer


@pytest.fixture(scope="module")
def tok_en(whisper_tiny_en_dir):
    from transformers import WhisperProcessor

    return WhisperProcessor.from_pretrained(whisper_tiny_en_dir).tokenizer


def ids(tokenizer, tokens):
    out = tokenizer.convert_tokens_to_ids(tokens)
    # An unknown token maps to <|endoftext|> (Whisper's unk): catch a typo in the expectation.
    unknown = [t for t, i in zip(tokens, out) if i == tokenizer.unk_token_id and t != "<|endoftext|>"]
    assert not unknown, unknown
    return out


def test_plain_labels_token_by_token(tok):
    labels = build_labels(tok, sentence="The train leaves", sentences=None, language="English",
                          task="transcribe", timestamps=False)
    assert labels == ids(tok, ["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>",
                               "ĠThe", "Ġtrain", "Ġleaves", "<|endoftext|>"])
    # Language names, codes and token spellings all mean the same language.
    for spelling in ("Chinese", "chinese", "zh", "<|zh|>"):
        zh = build_labels(tok, sentence="你好", sentences=None, language=spelling, task="translate",
                          timestamps=False)
        assert zh[:4] == ids(tok, ["<|startoftranscript|>", "<|zh|>", "<|translate|>", "<|notimestamps|>"])
        assert tok.decode(zh[4:-1]) == "你好"
        assert zh[-1] == tok.convert_tokens_to_ids("<|endoftext|>")


def test_no_language_means_no_language_token(tok):
    labels = build_labels(tok, sentence="hello", sentences=None, language=None, task="transcribe",
                          timestamps=False)
    assert decode_labels(tok, labels) == ["<|startoftranscript|>", "<|transcribe|>", "<|notimestamps|>",
                                          "Ġhello", "<|endoftext|>"]


def test_timestamp_labels_on_the_grid(tok):
    sentences = [{"start": 0.38, "end": 1.011, "text": "The train"},
                 {"start": 1.011, "end": 2.5, "text": " leaves"},
                 {"start": 29.0, "end": 30.0, "text": " now"}]
    labels = build_labels(tok, sentence="The train leaves now", sentences=sentences, language="en",
                          task="transcribe", timestamps=True)
    # 1.011 s is 50.55 grid steps: it rounds to the nearest step, 1.02 s.
    expected = ["<|startoftranscript|>", "<|en|>", "<|transcribe|>",
                "<|0.38|>", "ĠThe", "Ġtrain", "<|1.02|>",
                "<|1.02|>", "Ġleaves", "<|2.50|>",
                "<|29.00|>", "Ġnow", "<|30.00|>", "<|endoftext|>"]
    assert labels == ids(tok, expected)
    assert labels[-2] == 50364 + 1500


def test_leading_space_where_whisper_writes_one(tok):
    assert decode_labels(tok, build_labels(tok, sentence="Guten Tag", sentences=None, language="de",
                                           task="transcribe", timestamps=False))[4] == "ĠGuten"
    # Chinese, Japanese, Thai: no space; a space the user wrote is kept, not doubled.
    zh = build_labels(tok, sentence="你好", sentences=None, language="zh", task="transcribe", timestamps=False)
    assert zh[4:-1] == tok.encode("你好", add_special_tokens=False)
    ja = build_labels(tok, sentence="こんにちは", sentences=None, language=None, task="transcribe",
                      timestamps=False)
    assert ja[3:-1] == tok.encode("こんにちは", add_special_tokens=False)
    spaced = build_labels(tok, sentence=" Hello", sentences=None, language="en", task="transcribe",
                          timestamps=False)
    assert decode_labels(tok, spaced)[4:-1] == ["ĠHello"]
    # Without a language the script decides.
    assert decode_labels(tok, build_labels(tok, sentence="Hello", sentences=None, language=None,
                                           task="transcribe", timestamps=False))[3] == "ĠHello"


def test_english_labels_match_what_whisper_base_expects(whisper_base, processor, tok):
    """Teacher-forced on a shipped English clip, whisper-base finds the labels likely (the leading
    space and the timestamp layout are the pre-training format)."""
    from utils.core.audio import load_audio

    model = whisper_base
    row = json.loads((REPO / "dataset" / "en_test.jsonl").read_text().splitlines()[1])
    audio = load_audio(REPO / row["audio"]["path"])
    features = processor.feature_extractor(audio, sampling_rate=16000, return_tensors="pt").input_features
    for timestamps in (False, True):
        labels = build_labels(tok, sentence=row["sentence"], sentences=row["sentences"], language="en",
                              task="transcribe", timestamps=timestamps)
        with torch.no_grad():
            logits = model(input_features=features, decoder_input_ids=torch.tensor([labels[:-1]])).logits[0]
        nll = torch.nn.functional.cross_entropy(logits, torch.tensor(labels[1:]), reduction="none")
        # nll[3] is the first word's (after <|notimestamps|> or the first timestamp): about 0.2
        # nats with the leading space, about 8 without. The means were 0.13 and 0.67 (0.84 and
        # 1.30 without the space).
        assert nll[3] < 2.0, decode_labels(tok, labels)
        assert nll[2:].mean() < (0.5 if not timestamps else 1.0)


def test_segment_shorter_than_a_grid_step_keeps_one_step(tok):
    labels = build_labels(tok, sentence="a", sentences=[{"start": 1.0, "end": 1.005, "text": "a"}],
                          language="en", task="transcribe", timestamps=True)
    assert decode_labels(tok, labels)[3:6] == ["<|1.00|>", "Ġa", "<|1.02|>"]
    labels = build_labels(tok, sentence="a", sentences=[{"start": 29.995, "end": 30.0, "text": "a"}],
                          language="en", task="transcribe", timestamps=True)
    assert decode_labels(tok, labels)[3:6] == ["<|29.98|>", "Ġa", "<|30.00|>"]


@pytest.mark.parametrize("timestamps", [False, True])
def test_no_speech_labels(tok, tok_en, timestamps):
    # <|nospeech|> takes the language token's place, whatever the language and task.
    for sentences, language, task in (([], "zh", "transcribe"), (None, "en", "translate"),
                                      ([], None, "transcribe")):
        labels = build_labels(tok, sentence=" ", sentences=sentences, language=language, task=task,
                              timestamps=timestamps)
        assert labels == ids(tok, ["<|startoftranscript|>", "<|nospeech|>", "<|endoftext|>"])
        assert labels == [50258, 50362, 50257]
    # tiny.en's vocabulary calls the token <|nocaptions|>.
    labels = build_labels(tok_en, sentence="", sentences=[], language="en", task="transcribe",
                          timestamps=timestamps)
    assert labels == ids(tok_en, ["<|startoftranscript|>", "<|nocaptions|>", "<|endoftext|>"])
    assert labels == [50257, 50361, 50256]


def test_no_speech_label_matches_what_whisper_base_predicts(whisper_base, processor, tok):
    """The pre-trained model already puts <|nospeech|> right after <|startoftranscript|> on silence."""
    model = whisper_base
    labels = build_labels(tok, sentence="", sentences=[], language="zh", task="transcribe", timestamps=False)
    features = processor.feature_extractor(np.zeros(3 * 16000, dtype=np.float32), sampling_rate=16000,
                                           return_tensors="pt").input_features
    with torch.no_grad():
        probs = model(input_features=features, decoder_input_ids=torch.tensor([labels[:-1]])).logits[0].softmax(-1)
    assert probs[0, labels[1]] > 0.5          # P(<|nospeech|> | <|startoftranscript|>, silence)


def test_english_only_model(tok_en):
    plain = build_labels(tok_en, sentence="Hello world", sentences=None, language=None, task="transcribe",
                         timestamps=False)
    assert plain == ids(tok_en, ["<|startoftranscript|>", "<|notimestamps|>", "ĠHello", "Ġworld",
                                 "<|endoftext|>"])
    # tiny.en's tokenizer.json lists no timestamp tokens; they follow <|notimestamps|> (50362).
    stamped = build_labels(tok_en, sentence="Hello", sentences=[{"start": 0.5, "end": 1.24, "text": "Hello"}],
                           language="English", task="transcribe", timestamps=True)
    assert stamped == [50257, 50363 + 25, tok_en.convert_tokens_to_ids("ĠHello"), 50363 + 62, 50256]
    with pytest.raises(ValueError, match="English-only"):
        build_labels(tok_en, sentence="你好", sentences=None, language="zh", task="transcribe", timestamps=False)
    with pytest.raises(ValueError, match="translate"):
        build_labels(tok_en, sentence="hi", sentences=None, language=None, task="translate", timestamps=False)


@pytest.mark.parametrize("sentences, message", [
    ([{"start": -0.1, "end": 1.0, "text": "a"}], "negative"),
    ([{"start": 2.0, "end": 2.0, "text": "a"}], "not after start"),
    ([{"start": 1.0, "end": 31.0, "text": "a"}], "beyond Whisper's 30 s window"),
    ([{"start": 2.0, "end": 3.0, "text": "a"}, {"start": 1.0, "end": 1.5, "text": "b"}], "time order"),
    ([{"start": "0", "end": 1.0, "text": "a"}], "number"),
    (None, "need 'sentences'"),
])
def test_impossible_timestamps_are_rejected(tok, sentences, message):
    with pytest.raises(ValueError, match=message):
        build_labels(tok, sentence="a b", sentences=sentences, language="en", task="transcribe",
                     timestamps=True)


def test_unknown_language_and_task(tok):
    with pytest.raises(ValueError, match="unknown language 'Klingon'"):
        build_labels(tok, sentence="a", sentences=None, language="Klingon", task="transcribe", timestamps=False)
    with pytest.raises(ValueError, match="unknown task"):
        build_labels(tok, sentence="a", sentences=None, language="en", task="summarise", timestamps=False)
    assert to_language_code("Mandarin") == "zh" and to_language_code("") is None


def test_collator_strips_start_token_and_pads(processor, tok):
    sot = tok.convert_tokens_to_ids("<|startoftranscript|>")
    long = build_labels(tok, sentence="The train leaves", sentences=None, language="en", task="transcribe",
                        timestamps=False)
    short = build_labels(tok, sentence="", sentences=[], language="en", task="transcribe", timestamps=False)
    features = [{"input_features": np.full((80, 3000), i, dtype=np.float32), "labels": labels}
                for i, labels in enumerate([long, short])]
    batch = SpeechSeq2SeqCollator(processor, sot)(features)
    assert batch["input_features"].dtype == torch.float32
    assert batch["input_features"].shape == (2, 80, 3000)
    assert batch["input_features"][1].unique().tolist() == [1.0]
    assert batch["labels"].dtype == torch.long
    assert batch["labels"].tolist() == [long[1:], short[1:] + [-100] * (len(long) - len(short))]
    # A sequence that does not start with the decoder start token is left whole.
    batch = SpeechSeq2SeqCollator(processor, sot)([{"input_features": features[0]["input_features"],
                                                    "labels": long[1:]}])
    assert batch["labels"].tolist() == [long[1:]]
