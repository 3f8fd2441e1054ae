"""utils/core/languages.py: Whisper's language table without importing transformers."""
import subprocess
import sys

import pytest
from conftest import REPO


def test_language_table_matches_the_tokenizers_and_imports_nothing_heavy():
    # The torch-free GGML desktop app validates languages through this module.
    code = ("import sys; import utils.core.languages as L; "
            "print(len(L.LANGUAGES), L.to_language_code('Mandarin'), L.to_language_code('<|yue|>'), "
            "'transformers' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["100", "zh", "yue", "False", "False"]

    from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

    import utils.core.languages as ours
    # Same codes in the same order: the order is the order of the <|xx|> tokens.
    assert list(ours.LANGUAGES.items()) == list(LANGUAGES.items())
    assert ours.TO_LANGUAGE_CODE == TO_LANGUAGE_CODE


def test_one_parser_accepts_what_generate_accepts_plus_auto():
    from utils.core.languages import LanguageError, check_task, to_language_code

    for spelling in ("Chinese", "chinese", "zh", "ZH", "<|zh|>", "mandarin", " Mandarin "):
        assert to_language_code(spelling) == "zh"
    for spelling in (None, "", "auto", "AUTO"):
        assert to_language_code(spelling) is None
    # Words transformers' generate would refuse are refused here too, in one sentence that lists the valid ones.
    for spelling in ("detect", "none", "klingon", "zh-CN"):
        with pytest.raises(LanguageError, match=f"unknown language {spelling!r}; valid languages: .*zh \\(chinese\\)"):
            to_language_code(spelling)
    assert check_task("translate") == "translate"
    with pytest.raises(LanguageError, match="unknown task 'summarise'; valid tasks: transcribe, translate"):
        check_task("summarise")


def test_one_multilingual_rule_for_vocabularies_tokenizers_and_models(whisper_base_dir, whisper_tiny_en_dir):
    from transformers import WhisperConfig, WhisperTokenizer

    from utils.core.languages import is_multilingual
    from utils.core.models import checkpoint_is_multilingual
    from utils.data.labels import special_ids

    assert not is_multilingual(51864) and is_multilingual(51865) and is_multilingual(51866)
    for folder, expected in ((whisper_base_dir, True), (whisper_tiny_en_dir, False)):
        assert is_multilingual(WhisperConfig.from_pretrained(folder).vocab_size) is expected
        assert checkpoint_is_multilingual(str(folder)) is expected
        # The tokenizer of tiny.en lists the language tokens too; its vocabulary size tells.
        assert special_ids(WhisperTokenizer.from_pretrained(folder)).multilingual is expected
