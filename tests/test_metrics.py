"""CER/WER numbers on known strings, and the normalisation that decides what counts as an error."""
from __future__ import annotations

import pytest

from utils.core.metrics import count_errors, error_rate
from utils.core.text import normalize_text


def test_normalisation_removes_ascii_and_full_width_punctuation_case_and_whitespace():
    assert normalize_text("Hello,  World!  It's  OK.") == "hello world it s ok"
    assert normalize_text("你好，世界！（测试）“引号”。") == "你好 世界 测试 引号"
    assert normalize_text("ＡＢＣ，１２３") == "abc 123"


def test_traditional_chinese_becomes_simplified():
    assert normalize_text("這是測試，說話。") == "这是测试 说话"
    assert normalize_text("這是測試", to_simple=False) == "這是測試"


def test_cer_on_known_strings():
    # one substitution (气 -> 汽) in 6 characters; punctuation and spaces do not count
    assert error_rate(["今天天气很好"], ["今天 天汽很好。"], "cer").value == pytest.approx(1 / 6)
    # corpus level: (1 + 2) errors over (6 + 4) characters, not the mean of 1/6 and 2/4
    result = error_rate(["今天天气很好", "谢谢你们"], ["今天天汽很好", "谢谢"], "cer")
    assert result.value == pytest.approx(3 / 10)
    assert (result.counts.substitutions, result.counts.deletions, result.counts.insertions) == (1, 2, 0)
    assert [u["errors"] for u in result.utterances] == [1, 2]


def test_wer_on_known_strings():
    result = error_rate(["The cat sat on the mat."], ["the cat sat on a mat and"], "wer")
    assert (result.counts.substitutions, result.counts.deletions, result.counts.insertions) == (1, 0, 1)
    assert result.value == pytest.approx(2 / 6)
    assert error_rate(["hello world"], ["hello world"], "wer").value == 0.0


def test_switches_change_what_counts():
    assert error_rate(["你好。"], ["你好"], "cer", remove_pun=False).value == pytest.approx(1 / 3)
    assert error_rate(["说话"], ["說話"], "cer", to_simple=False).value == pytest.approx(1.0)
    assert error_rate(["说话"], ["說話"], "cer").value == 0.0


def test_no_speech_reference_counts_every_hypothesis_unit_as_insertion():
    assert count_errors("", "啊啊", "cer").insertions == 2
    assert count_errors("", "", "wer").errors == 0
    result = error_rate(["你好", ""], ["你好", "嗯"], "cer")
    assert result.value == pytest.approx(1 / 2) and result.counts.insertions == 1


def test_unknown_metric_is_rejected():
    with pytest.raises(ValueError, match="metric must be one of"):
        count_errors("a", "b", "ser")


def test_english_is_scored_with_whispers_english_normaliser(whisper_tiny_en_dir):
    from utils.core.text import english_spelling_map

    spelling = english_spelling_map(whisper_tiny_en_dir)
    reference, hypothesis = "The train leaves every twenty minutes.", "the train leaves every 20 minutes"
    ours = error_rate([reference], [hypothesis], "wer")
    assert (ours.normalizer, ours.counts.errors) == ("punctuation-simplified", 1)
    whisper = error_rate([reference], [hypothesis], "wer", language="en", english_spelling=spelling)
    assert (whisper.normalizer, whisper.value) == ("whisper-english", 0.0)
    # The spelling map (normalizer.json) makes British and American spellings one word.
    assert error_rate(["The colour, Mr. Smith"], ["the color mister smith"], "wer", language="en",
                      english_spelling=spelling).value == 0.0
    assert error_rate(["The colour"], ["the color"], "wer", language="en").value == 0.5
    assert error_rate(["Ça va, très bien!"], ["ça va très bien"], "wer", language="fr").normalizer == "whisper-basic"


def test_chinese_scoring_is_unchanged_and_languages_can_differ_per_clip():
    result = error_rate(["會議定在九月十五號。", "Twenty cats."], ["会议定在九月十五号", "20 cats"], "cer",
                        language=["zh", "en"])
    assert result.normalizer == "punctuation-simplified+whisper-english"
    assert [u["hypothesis_normalized"] for u in result.utterances] == ["会议定在九月十五号", "20 cats"]
    assert result.counts.errors == 0
    alone = error_rate(["會議定在九月十五號。"], ["会议定在九月十五号"], "cer", language="zh")
    assert alone.to_dict()["normalizer"] == "punctuation-simplified" and alone.value == 0.0
