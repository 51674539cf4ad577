"""``python -m cohortlens`` runs the CLI."""

from cohortlens.cli.main import main

main()
