"""``python -m hostsched`` runs the command line."""

from hostsched.cli import main

main()
