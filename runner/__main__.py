"""Entry point of ``python -m runner``."""

import sys

from runner import app


def cli() -> None:
    """Hydra exits 1 when it cannot compose the config (a bad override or type) before our
    task starts; that is a usage error, reported with exit status 2 like every other one."""
    try:
        app.main()
    except SystemExit as stop:
        if stop.code == 1 and not app.job_started:
            sys.exit(2)
        raise


if __name__ == "__main__":
    cli()
