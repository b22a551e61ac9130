"""The `introspect` command: `parser` reads the arguments, `commands` carries them out."""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["entry_point", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    from .commands import main as carry_out

    return carry_out(argv)


def entry_point() -> None:
    if sys.argv[1:2] == ["run"]:
        # The launcher imports every service's modules (most of a second): started before this
        # process imports its own (0.4 s), the two import side by side. `run` starts it anyway.
        from ..local import start_launcher

        start_launcher()
    sys.exit(main())
