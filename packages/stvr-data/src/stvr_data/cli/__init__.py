"""The `stvr-data` command line (group in `main.py`, one module per command)."""
