"""The report stage reads JSON and CSV and draws: it runs with torch, transformers and lightning unimportable."""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_report_stage_runs_without_torch(tmp_path, run_without_torch):
    for name in ("params.yaml", "metrics", "plots"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    code = (f"sys.path.insert(0, {str(REPO)!r})\n"
            "import runpy\nsys.argv = ['pipeline.report', '--params', 'params.yaml']\n"
            "runpy.run_module('pipeline.report', run_name='__main__', alter_sys=True)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'lightning', 'wandb')"
            " and sys.modules[m] is not None))\n")
    out = run_without_torch(code, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"  # nothing heavy was imported
    for page in ("longlora.md", "simcse.md", "ablations.md"):
        text = (tmp_path / "reports" / page).read_text()
        assert "Claims checked" in text and "positive control" in text, page
    # the negative control: training code does fail under the same block
    bad = run_without_torch("import repro.workflows.longlora_eval\nimport repro.models.longlora\n", cwd=tmp_path)
    assert bad.returncode != 0 and "import of torch halted" in bad.stderr
