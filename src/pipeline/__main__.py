"""The ``pipeline`` console script and ``python -m pipeline``.

Kept apart from ``pipeline.cli``, which imports typer and every command's module (a quarter of
a second): SIGTERM and Ctrl-C are the CLI's stop from the first instant, not only once the
command runs. A SIGTERM in that quarter second killed the process with no word (exit 143), a
Ctrl-C in its first half printed a traceback of the import it broke.
"""

import signal
import sys


def _stop(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    """Console-script entry point: ``pipeline.cli.main`` with the signals the CLI's from here."""
    signal.signal(signal.SIGTERM, _stop)
    try:
        from pipeline.cli import main as cli
    except KeyboardInterrupt:
        sys.stderr.write(
            "error: pipeline interrupted before the command began: nothing was written; "
            "run it again\n"
        )
        raise SystemExit(130) from None
    cli()


if __name__ == "__main__":
    main()
