"""Where training logs go (finetune.py --report_to): the names transformers' TrainingArguments.report_to takes,
checked against what is installed before a run starts, since Trainer only finds a missing package after the
data and the model are loaded, and then with a traceback."""
from __future__ import annotations

from typing import Union

from utils.core.errors import UsageError


def reporters(report_to: str) -> Union[str, list[str]]:
    """'none', 'all' or a comma-separated list of integrations ('tensorboard', 'wandb,mlflow', ...) as
    TrainingArguments.report_to takes it; a name transformers does not know, or whose package is not
    installed, is a UsageError."""
    from transformers.integrations.integration_utils import (
        INTEGRATION_TO_CALLBACK,
        get_available_reporting_integrations,
    )

    names = [name.strip() for name in report_to.split(",") if name.strip()]
    if names in (["none"], ["all"]):
        return names[0]
    known = sorted(INTEGRATION_TO_CALLBACK)
    for name in names or [""]:
        if name not in INTEGRATION_TO_CALLBACK:
            raise UsageError(f"--report_to: {name!r} is not a reporter transformers knows; use none, all or a "
                             f"comma-separated list of {', '.join(known)}")
    available = get_available_reporting_integrations()
    for name in names:
        if name not in available:
            raise UsageError(f"--report_to={name}: the {name} package is not installed in this environment; "
                             f"install it, or use --report_to=tensorboard or none")
    return names
