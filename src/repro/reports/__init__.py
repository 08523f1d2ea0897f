"""Report pages, one module per paper (see pipeline/report.py)."""
