"""pyproject.toml and requirements.txt say the same thing, and say it in a form pip and pytest accept."""
import tomllib

from conftest import REPO


def requirement_lines() -> list[str]:
    lines = (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_requirements_txt_is_pyproject_with_every_extra():
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = list(project["dependencies"])
    for extra in ("server", "gui", "desktop", "bench", "test"):
        declared += project["optional-dependencies"][extra]
    assert requirement_lines() == declared


def test_every_pinned_package_is_installed_here():
    # The environment `make setup` builds is the one the tests run in: each requirement resolves in it.
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    missing, outside = [], []
    for line in requirement_lines():
        requirement = Requirement(line)
        try:
            installed = version(requirement.name)
        except PackageNotFoundError:
            missing.append(requirement.name)
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            outside.append(f"{requirement} (installed {installed})")
    assert missing == [] and outside == []


def test_markers_used_by_the_tests_are_declared():
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["pytest"]["ini_options"]
    declared = {marker.split(":")[0] for marker in config["markers"]}
    assert declared == {"slow", "gui", "browser", "build"}
    used = set()
    for path in (REPO / "tests").glob("test_*.py"):
        text = path.read_text(encoding="utf-8")
        used.update(name for name in declared if f"pytest.mark.{name}" in text)
    assert used == declared
