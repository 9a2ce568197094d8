"""`python -m cbstop`: the `cbstop` command."""

from cbstop.cli import main

main()
