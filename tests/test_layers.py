"""The house's layers: the explorer's services (galleries, catalog, jobs, links, exports) import no Gradio and
nothing of the UI, so the CLI and scripts use them without a web stack; only ``profashion/ui`` imports Gradio."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "profashion"


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def test_only_the_ui_imports_gradio_and_nothing_below_it_imports_the_ui():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(REPO)
        if rel.parts[1] == "ui":
            continue
        for module in _imports(path):
            if module.split(".")[0] in ("gradio", "gradio_client") or module.startswith("profashion.ui"):
                wrong.append(f"{rel} imports {module}")
    assert not wrong, wrong


def test_the_explorer_loads_without_gradio():
    code = ("import sys, profashion.explorer as e; e.Galleries, e.JobManager, e.read_link, e.export_case; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('gradio', 'gradio_client')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout


def test_the_check_finds_an_import_of_gradio(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("def f():\n    from gradio_client.utils import encode_file_path\n")
    assert "gradio_client.utils" in _imports(f)
