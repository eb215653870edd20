"""The command line: ``migrator`` (``migrator/cli/main.py``); one module per command group."""
