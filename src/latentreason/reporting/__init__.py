"""Reporting: the HTML report, its plots and the terminal tables (read results, never run anything)."""
