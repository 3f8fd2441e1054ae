"""User mistakes and the exit statuses every script shares.

A user mistake (a missing file, a malformed manifest line, a flag that cannot work on this machine)
raises a UserError subclass whose message is one sentence naming what is wrong and where; scripts end
it with that sentence and EXIT_USAGE (utils.core.cli.run_script). Anything else is a bug and keeps
its traceback. UserError is a ValueError, so callers that guard a value check keep working.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_BUG = 1          # an unexpected exception: Python's own status, with its traceback
EXIT_USAGE = 2        # a user mistake: a flag, a file, the data or the machine; one `error:` line
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT


class UserError(ValueError):
    """A mistake the user can fix; the message says what is wrong, where, and what to do."""


class UsageError(UserError):
    """A flag value or combination of flags that cannot work; the message names the flag."""
