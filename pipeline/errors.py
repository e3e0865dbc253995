"""One exception type for problems the user can fix, and the one place that prints it.

Stages raise :class:`UserError` for bad input (a missing path, a corrupt image, an
out-of-range parameter). ``run_cli`` turns it into a single line on stderr and exit
status 2, never a traceback.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable


class UserError(Exception):
    """A problem with the user's input or parameters, stated in one line."""


def run_cli(main: Callable[[], None]) -> None:
    """Run ``main``; a :class:`UserError` becomes ``error: <message>`` and exit code 2."""
    try:
        main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        raise SystemExit(130) from None


def wait_until_reachable(connect: Callable[[float], None], timeout_s: float, what: str) -> None:
    """Call ``connect(seconds)`` about once a second until it returns, for at most ``timeout_s``;
    then raise ``cannot reach <what> after <timeout_s> s (<reason>)``. ``connect`` raises OSError (or
    ValueError) while the other side does not answer, and gets the seconds it may block."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            connect(max(0.5, min(3.0, deadline - time.monotonic())))
            return
        except (OSError, ValueError) as exc:
            if time.monotonic() + 1 >= deadline:
                reason = getattr(exc, "reason", None) or exc
                reason = getattr(reason, "strerror", None) or reason
                raise UserError(f"cannot reach {what} after {timeout_s:.0f} s ({reason})") from None
            time.sleep(1)


def seconds_from_env(given: float | None, env: str, default: float) -> float:
    """``given``, else the environment variable ``env`` (seconds), else ``default``."""
    return float(os.environ.get(env, default)) if given is None else given
