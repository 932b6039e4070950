"""The ``tokenward`` console script: a clear message when the server extra is missing."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from tokenward.cli import main as cli_main
    except ModuleNotFoundError as exc:
        sys.stderr.write(
            f"tokenward: the server is not installed ({exc.name} is missing); "
            'run: pip install "tokenward[server]"\n'
        )
        raise SystemExit(2) from None
    cli_main()
