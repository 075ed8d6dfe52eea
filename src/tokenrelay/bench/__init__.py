"""The load tester behind `tokenrelay bench` (see runner.py for the whole run)."""
