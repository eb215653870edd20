"""Resilience tests (issue 8): kill -9 of migrator on a real lab (test_kill*.py, owner kills) and bad
input everywhere (test_bad_input*.py, owner badinput). Kept minimal: each module has its own fixtures."""
