"""The shape of the code (docs/architecture.md): layers without cycles, one idea in one place, short functions."""
import ast
import re
from collections import defaultdict

import pytest
from conftest import REPO

UTILS = REPO / "utils"
# A layer may import from itself and from the layers listed for it (imports inside functions count too).
ALLOWED = {
    "core": {"core"},
    "data": {"core", "data"},
    "training": {"core", "data", "training"},
    "inference": {"core", "inference"},
    "export": {"core", "inference", "export"},
    "apps": {"core", "data", "inference", "export", "apps"},
    "bench": {"core", "bench"},
}
PROJECT_FILES = sorted([*REPO.glob("*.py"), *REPO.glob("tools/*.py"), *REPO.glob("WhisperDesktop/*.py"),
                        *UTILS.rglob("*.py")])


def module_name(path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def utils_imports(path) -> set[str]:
    """Every utils module `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "utils":
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "utils")
    modules = {module_name(p) for p in UTILS.rglob("*.py")}
    return {name for name in found if name in modules}


def graph() -> dict[str, set[str]]:
    return {module_name(p): utils_imports(p) - {module_name(p)} for p in UTILS.rglob("*.py")}


def test_every_package_says_what_belongs_in_it():
    for package in [UTILS, *[p for p in UTILS.rglob("*") if p.is_dir() and p.name != "__pycache__"]]:
        init = package / "__init__.py"
        assert init.is_file(), package
        assert ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))), f"{init} has no docstring"


def test_layers_only_import_downwards():
    wrong = []
    for module, imports in graph().items():
        parts = module.split(".")
        if len(parts) < 2:
            continue
        layer = parts[1]
        for target in imports:
            target_parts = target.split(".")
            if len(target_parts) > 1 and target_parts[1] not in ALLOWED[layer]:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node, path):
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]) if target in path else target)
            elif target not in state:
                visit(target, path + [target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def long_functions():
    for path in PROJECT_FILES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 60 and "Long because" not in (ast.get_docstring(node) or ""):
                    yield f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({length} lines)"


def test_functions_are_short_or_say_why_not():
    assert list(long_functions()) == []


def definitions() -> dict[str, list[str]]:
    """Top-level and class-level names defined in the project, with where."""
    where = defaultdict(list)
    for path in PROJECT_FILES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            names = []
            if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            for name in names:
                where[name].append(str(path.relative_to(REPO)))
    return where


@pytest.mark.parametrize("name", ["TASKS", "LANGUAGES", "MULTILINGUAL_VOCAB", "UsageError", "UserError",
                                  "print_config", "Segment", "Word", "remove_punctuation", "to_simplified",
                                  "normalize_text", "load_whisper", "load_processor", "ModelLoadError",
                                  "write_json_atomic", "write_text_atomic", "replace_dir", "atomic_write",
                                  "load_transcriber", "BACKENDS", "parse_bool", "str2bool", "REPO_ROOT",
                                  "language_code", "to_language_code", "check_task", "is_multilingual"])
def test_one_idea_is_defined_in_one_place(name):
    assert len(definitions().get(name, [])) <= 1, definitions()[name]


def source_lines(pattern: str):
    regex = re.compile(pattern)
    for path in PROJECT_FILES:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if regex.search(line) and not line.lstrip().startswith("#"):
                yield f"{path.relative_to(REPO)}:{number}: {line.strip()}"


def test_files_are_renamed_into_place_in_one_module():
    # Write-then-rename is utils/core/files.py's job; a copy elsewhere is how half-written files come back.
    renames = [hit for hit in source_lines(r"os\.replace\(|os\.rename\(") if not hit.startswith("utils/core/files.py")]
    assert renames == []


def test_one_rule_for_multilingual_and_one_zhconv_caller():
    assert [hit for hit in source_lines(r"5186[456]") if not hit.startswith("utils/core/languages.py")] == []
    assert [hit for hit in source_lines(r"import zhconv|from zhconv") if not hit.startswith("utils/core/text.py")] == []


def test_no_script_parses_flags_by_hand():
    # Every script's flags are a dataclass read by utils.core.cli; a hand-made parser drifts from the contract.
    hand_made = [hit for hit in source_lines(r"argparse\.ArgumentParser\(|HfArgumentParser|string_to_bool")
                 if not hit.startswith("utils/core/cli.py")]
    assert hand_made == []
