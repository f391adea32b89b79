"""The preflight's commands: ``python -m workflow_scripts preflight <train|evaluate|forecast> ...``."""

from __future__ import annotations

from ..cli import run_commands
from .forecast import forecast
from .measure_evaluate import measure_evaluation
from .measure_train import train_command

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    """Run one preflight command (``train``, ``evaluate`` or ``forecast``), one flag per keyword.

    Parameters
    ----------
    argv
        The command and its flags (``forecast --train a.json ...``); None: ``sys.argv[1:]``.
    """
    commands = {"train": train_command, "evaluate": measure_evaluation, "forecast": forecast}
    run_commands(commands, argv)


if __name__ == "__main__":
    main()
