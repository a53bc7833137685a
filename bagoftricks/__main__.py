"""The console script `bagoftricks` (and `python -m bagoftricks`): `ablate SPEC` runs an ablation,
anything else goes to the LightningCLI (`fit`, `validate`, `test`, `predict`)."""

from __future__ import annotations

import os
import sys

from bagoftricks.ablation import ablate_main
from bagoftricks.cli import cli_main, ignore_known_warnings
from bagoftricks.errors import UserError


def main(argv: list[str] | None = None) -> None:
    """A user's mistake (a :class:`~bagoftricks.errors.UserError`) is one line on stderr; any other
    exception keeps its traceback. Set ``BAGOFTRICKS_TRACEBACK=1`` to see the traceback of a mistake too."""
    args = sys.argv[1:] if argv is None else argv
    ignore_known_warnings()
    try:
        if args[:1] == ["ablate"]:
            ablate_main(args[1:])
        else:
            cli_main(argv)  # None: LightningCLI reads sys.argv itself (given both, it warns that they differ)
    except UserError as err:
        if os.environ.get("BAGOFTRICKS_TRACEBACK"):
            raise
        sys.exit(f"bagoftricks: error: {err}")


if __name__ == "__main__":
    main()
