"""One exception type for problems the user can fix, and the one place that prints it.

Stages raise :class:`UserError` for bad input (a missing path, a corrupt image, an
out-of-range parameter). ``run_cli`` turns it into a single line on stderr and exit
status 2, never a traceback.
"""

from __future__ import annotations

import sys
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
