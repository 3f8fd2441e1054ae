"""utils/bench/readme_section.py: generated README parts change only between their markers."""
import pytest

from utils.bench.readme_section import SectionError, replace_section
from utils.core.errors import UserError


def test_only_the_named_section_changes(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# title\n<!-- begin: speed (tools/x.py writes this part) -->\nold\n<!-- end: speed -->\n"
                      "<!-- begin: accuracy -->\nkeep\n<!-- end: accuracy -->\ntail\n", encoding="utf-8")
    replace_section(str(readme), "speed", "| a | b |\n|---|---|\n")
    assert readme.read_text(encoding="utf-8") == (
        "# title\n<!-- begin: speed (tools/x.py writes this part) -->\n| a | b |\n|---|---|\n<!-- end: speed -->\n"
        "<!-- begin: accuracy -->\nkeep\n<!-- end: accuracy -->\ntail\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]   # no temporary file left


def test_missing_markers_are_a_user_error_and_the_file_is_untouched(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n", encoding="utf-8")
    with pytest.raises(SectionError, match="no '<!-- begin: speed"):
        replace_section(str(readme), "speed", "x")
    assert readme.read_text(encoding="utf-8") == "# no markers\n"
    # A script ends a UserError with one `error:` line and exit status 2, not a traceback.
    assert issubclass(SectionError, UserError)
    with pytest.raises(SectionError, match="not found"):
        replace_section(str(tmp_path / "missing.md"), "speed", "x")
