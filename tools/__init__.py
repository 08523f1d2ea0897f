"""Tools that run beside the pipeline and that no DVC stage imports.

Run from the repository root as ``python -m tools.<name>`` (``tools.dashboards``, ``tools.plots_page``); the
tests and benchmarks import them from there too. ``tests/test_code_deps.py`` checks that no stage imports one,
so editing a tool reruns nothing.
"""
