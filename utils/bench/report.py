"""What every benchmark report says the same way: the machine, the exact command, the chart file and
the README section it rewrites."""
from __future__ import annotations

import os
import platform
import shlex
from typing import Optional, Sequence

from utils.core.files import atomic_write


def machine_description() -> str:
    """'<CPU model>, <n> cores, <OS> <architecture>': the first thing a reader needs to compare a table."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or model
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}"


def command_line(script: str, argv: Sequence[str]) -> str:
    """The command that reproduces this run, as a reader would type it."""
    return " ".join(["python", script, *(shlex.quote(arg) for arg in argv)])


def save_figure(figure, path: str) -> None:
    """A matplotlib figure as a PNG file, written atomically; the figure is closed."""
    import matplotlib.pyplot as plt

    with atomic_write(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=100)
    plt.close(figure)


def pyplot():
    """matplotlib's pyplot without a display (the benchmarks run on servers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_readme_section(readme: str, name: str, command: str, table: str, summary: Sequence[str],
                         chart: Optional[str]) -> None:
    """A benchmark's exact command, table, goal lines and chart in the README's generated section `name`."""
    from utils.bench.readme_section import replace_section

    body = ["```bash", command, "```", "", table.rstrip("\n"), "", *(f"- {line}" for line in summary), ""]
    if chart:
        body.append(f"![{name}]({os.path.relpath(chart, os.path.dirname(os.path.abspath(readme)))})")
    replace_section(readme, name, "\n".join(body))
