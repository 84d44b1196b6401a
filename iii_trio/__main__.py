"""``python -m iii_trio``: the same command line as the ``iii-trio`` script."""

from ._cli import main

raise SystemExit(main(prog="python -m iii_trio"))
