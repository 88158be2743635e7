"""The benchmarks start: each one's imports resolve with the paths it sets itself (a moved
library once broke bench/maillog_detect.py without any test noticing). Scripts that need
the lab only have their imports checked here; maillog_detect.py also runs its --help."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((REPO / "bench").glob("*.py"))


def _path_inserts(tree):
    """Folders the script puts on sys.path: sys.path.insert(0, str(REPO / "x"))."""
    out = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and ast.unparse(node.func) == "sys.path.insert"
                and len(node.args) == 2):
            text = ast.unparse(node.args[1])
            if text.startswith("str(REPO / "):
                out.append(REPO / ast.literal_eval(text[len("str(REPO / "):-1]))
    return out


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_top_level_import_of_a_benchmark_resolves(script):
    tree = ast.parse(script.read_text())
    dirs = _path_inserts(tree) + [script.parent]
    missing = []
    for node in tree.body:
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
        for name in names:
            top = name.split(".")[0]
            if top in sys.stdlib_module_names:
                continue
            found = any((d / f"{top}.py").exists() or (d / top).is_dir() for d in dirs)
            if not found and (top.startswith("mailfleet") or top == "mflab"):
                missing.append(name)  # ours: only where the script looks (not this test's path)
            elif not found:
                try:
                    __import__(top)
                except ImportError:
                    missing.append(name)
    assert missing == [], f"{script.name}: {missing} not importable from {dirs}"


def test_the_detector_benchmark_starts():
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "maillog_detect.py"), "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--lines" in proc.stdout, proc.stderr[-2000:]
