"""``python -m aifr``."""

from aifr.cli.main import main

main()
