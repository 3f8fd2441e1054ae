"""utils/core/languages.py: Whisper's language table without importing transformers."""
import subprocess
import sys

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
