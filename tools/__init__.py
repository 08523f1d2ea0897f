"""Tools that run beside the pipeline (``python -m tools.<name>``); no stage imports them."""
