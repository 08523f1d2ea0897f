"""The offline page template for ``dvc plots show`` (``.dvc/plots/offline.html``).

    python -m tools.plots_page          # rebuild the template from .dvc/plots/vendor/*.min.js
    python -m tools.plots_page --screenshot out.png   # `dvc plots show`, then render it in headless Chromium

DVC's default page loads vega, vega-lite and vega-embed from a CDN, so it is blank without a
network. ``.dvc/config`` points ``plots.html_template`` at this template instead: the three
minified builds (vendored from the npm registry, see ``.dvc/plots/vendor/README.md``) are inlined,
so the page DVC writes renders from a local file. The template has no ``{scripts}`` placeholder,
which is where DVC would put its CDN tags. The per-plot template ``.dvc/plots/series.json`` draws
one line per revision, model and evaluation set, and leaves out missing values instead of
drawing them as 0.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

VENDOR_SCRIPTS = ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js")  # load order: embed needs both
TEMPLATE_NAME = "offline.html"


def plots_dir(root: str | Path = ".") -> Path:
    """``.dvc/plots`` of the repository at ``root``."""
    return Path(root) / ".dvc" / "plots"


def build_template(root: str | Path = ".") -> str:
    """The page template with the vendored scripts inlined and DVC's ``{plot_divs}`` placeholder.

    Raises:
        FileNotFoundError: naming a vendored script that is missing.
    """
    scripts = []
    for name in VENDOR_SCRIPTS:
        path = plots_dir(root) / "vendor" / name
        if not path.is_file():
            raise FileNotFoundError(f"vendored script missing: {path} (see .dvc/plots/vendor/README.md)")
        source = path.read_text(encoding="utf-8")
        if "</script" in source:
            raise ValueError(f"{path} contains '</script' and cannot be inlined")
        scripts.append(f"<script>/* {name} (vendored) */\n{source}\n</script>")
    return "\n".join([
        "<!DOCTYPE html>",
        "<html>",
        "<head>",
        '    <meta charset="utf-8">',
        "    {refresh_tag}",
        "    <title>DVC plots (offline)</title>",
        *scripts,
        "    <style>body { font-family: sans-serif; } table { border-spacing: 15px; }</style>",
        "</head>",
        "<body>",
        "    {plot_divs}",
        "</body>",
        "</html>",
        "",
    ])


def write_template(root: str | Path = ".") -> Path:
    """Write ``.dvc/plots/offline.html`` and return its path."""
    out = plots_dir(root) / TEMPLATE_NAME
    out.write_text(build_template(root), encoding="utf-8")
    return out


def find_chromium() -> str | None:
    """The first headless-capable Chromium or Chrome on ``PATH``, else None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if found := shutil.which(name):
            return found
    return None


def screenshot(html: Path, png: Path, width: int = 1000, height: int = 2600, timeout: float = 120) -> Path:
    """Render a local page in headless Chromium (no network needed) and save a PNG of it.

    Raises:
        FileNotFoundError: no Chromium on ``PATH`` (``apt install chromium``).
        RuntimeError: Chromium wrote no screenshot (its stderr is in the message).
    """
    browser = find_chromium()
    if browser is None:
        raise FileNotFoundError("no chromium on PATH (apt install chromium)")
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={profile}",
             "--virtual-time-budget=10000", f"--window-size={width},{height}", f"--screenshot={png}",
             html.resolve().as_uri()],
            capture_output=True, text=True, timeout=timeout)
    if not png.is_file():
        raise RuntimeError(f"chromium wrote no screenshot of {html}: {proc.stderr[-2000:]}")
    return png


def ink_fraction(png: Path) -> float:
    """Share of pixels that are not (near) white: 0 for a blank page."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("L"), dtype=np.uint8)
    return float((pixels < 240).mean())


def show_plots(root: Path, out_dir: Path) -> Path:
    """Run ``dvc plots show`` in ``root`` into ``out_dir``; return the page it wrote."""
    subprocess.run(["dvc", "plots", "show", "-o", str(out_dir)], cwd=root, check=True, capture_output=True, text=True)
    page = out_dir / "index.html"
    if not page.is_file():
        raise RuntimeError(f"dvc plots show wrote no {page}")
    return page


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("."))
    parser.add_argument("--screenshot", type=Path, default=None,
                        help="also run `dvc plots show` and save a headless-Chromium screenshot here")
    args = parser.parse_args(argv)
    print(write_template(args.root))
    if args.screenshot:
        with tempfile.TemporaryDirectory() as tmp:
            page = show_plots(args.root, Path(tmp))
            shot = screenshot(page, args.screenshot)
        print(f"{shot}: {ink_fraction(shot):.1%} of the page is drawn")


if __name__ == "__main__":
    main()
