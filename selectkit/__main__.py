"""``python -m selectkit`` runs the command line."""

from selectkit.cli import main

main()
