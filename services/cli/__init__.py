"""The `introspect` command: `parser` reads the arguments, `commands` carries them out."""

from __future__ import annotations

import sys

from .commands import main

__all__ = ["entry_point", "main"]


def entry_point() -> None:
    sys.exit(main())
