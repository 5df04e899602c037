#!/usr/bin/env python3
"""Executes every notebook in notebooks/ headless with the evcxr kernel and checks the outputs.

    python3 tests/notebooks/check_notebooks.py [NAME ...]

nbconvert fails on a compile error but not on a panic inside a cell, so after executing, every
output is searched for errors and panics, and each notebook's rich outputs are checked: the
figures are there, the numbers parse and lie in range. The executed copies go to
$RKIF_NOTEBOOK_OUT (default target/notebooks-executed/). $EVCXR_TMPDIR defaults to
<system temp>/rkif-evcxr-notebooks so that the second run reuses the compiled dependencies. It
must lie outside the repository (cargo refuses a crate inside a workspace that does not list it)
and on a file system where evcxr can load what it builds (under /root/.cache its dlopen failed here; /tmp works).

Exit status 0 when every notebook ran clean; the last line is `N passed, N failed`.
"""
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
TIMEOUT_S = int(os.environ.get("RKIF_NOTEBOOK_CELL_TIMEOUT", "1800"))

# Minimum count of each figure kind (data-rkif-figure) and each block (data-rkif) per notebook.
EXPECT = {
    "01-quickstart.ipynb": {
        "figures": {"accuracy-heatmap": 4, "forgetting-bars": 1, "loss-curve": 1, "fusion-rounds": 1},
        "blocks": {"session": 1, "task-plan": 1, "accuracy-matrix": 2, "comparison": 1},
    },
    "02-identify.ipynb": {
        "figures": {"importance-heatmap": 3, "loss-curve": 2},
        "blocks": {"eval-row": 1, "task-plan": 1, "steps": 2, "importance": 3},
    },
    "03-fuse.ipynb": {
        "figures": {"fusion-modules": 1, "fusion-rounds": 1},
        "blocks": {"old-task-loss": 2, "fusion": 1, "round-weights": 1, "fusion-rounds": 1},
    },
    "04-compare.ipynb": {
        "figures": {"accuracy-heatmap": 5, "forgetting-bars": 1},
        "blocks": {"comparison": 1},
    },
    "05-real-model.ipynb": {
        "figures": {"importance-heatmap": 2, "fusion-modules": 1, "accuracy-heatmap": 1},
        "blocks": {"session": 1, "task-plan": 1, "fusion": 1, "accuracy-matrix": 1},
    },
}

ERROR_PATTERNS = [
    re.compile(r"panicked at"),
    re.compile(r"^error(\[E\d+\])?:", re.M),
    re.compile(r"Child process terminated"),
    re.compile(r"^Error: ", re.M),
]


def outputs_text(nb):
    """(cell index, output kind, text) of every output of every code cell."""
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        for out in cell.get("outputs", []):
            kind = out.get("output_type")
            if kind == "stream":
                yield i, f"stream:{out.get('name')}", "".join(out.get("text", ""))
            elif kind == "error":
                yield i, "error", out.get("ename", "") + ": " + out.get("evalue", "") + "\n" + "\n".join(out.get("traceback", []))
            else:
                for mime, value in out.get("data", {}).items():
                    text = "".join(value) if isinstance(value, list) else str(value)
                    yield i, f"{kind}:{mime}", text


def check_numbers(name, html, problems):
    """Every data-value parses; accuracy cells and OP lie in [0, 1], BWT and F in [-1, 1]."""
    for m in re.finditer(r'data-value="([^"]*)"', html):
        try:
            v = float(m.group(1))
        except ValueError:
            problems.append(f"{name}: data-value {m.group(1)!r} does not parse")
            continue
        if v != v or v in (float("inf"), float("-inf")):
            problems.append(f"{name}: non-finite data-value {m.group(1)}")
    for table in re.findall(r'<table data-rkif="accuracy-table".*?</table>', html, re.S):
        cells = [float(x) for x in re.findall(r'data-value="([^"]*)"', table)]
        if not cells:
            problems.append(f"{name}: an accuracy table without numbers")
        for v in cells:
            if not 0.0 <= v <= 1.0:
                problems.append(f"{name}: accuracy {v} outside [0, 1]")
    for metric, lo, hi in [("OP", 0.0, 1.0), ("BWT", -1.0, 1.0), ("F", -1.0, 1.0)]:
        for v in re.findall(rf'data-metric="{metric}" data-value="([^"]*)"', html):
            if not lo <= float(v) <= hi:
                problems.append(f"{name}: {metric} = {v} outside [{lo}, {hi}]")
    shares = re.findall(r'data-case="[^"]*" data-value="([^"]*)"', html)
    for i in range(0, len(shares) - 3, 4):
        total = sum(float(x) for x in shares[i:i + 4])
        if abs(total - 1.0) > 1e-3:
            problems.append(f"{name}: fusion shares add up to {total}, not 1")


def check(name, nb):
    problems = []
    html_all = []
    for i, kind, text in outputs_text(nb):
        if kind == "error":
            problems.append(f"{name}: cell {i} raised: {text[:2000]}")
            continue
        for pat in ERROR_PATTERNS:
            if pat.search(text):
                problems.append(f"{name}: cell {i} ({kind}) shows an error: {text[:2000]}")
                break
        if kind.endswith("text/html"):
            html_all.append(text)
    html = "\n".join(html_all)
    expect = EXPECT.get(name, {})
    for fig, n in expect.get("figures", {}).items():
        found = html.count(f'data-rkif-figure="{fig}"')
        if found < n:
            problems.append(f"{name}: {found} figure(s) {fig}, expected at least {n}")
    for block, n in expect.get("blocks", {}).items():
        found = len(re.findall(rf'data-rkif="{re.escape(block)}"', html))
        if found < n:
            problems.append(f"{name}: {found} block(s) {block}, expected at least {n}")
    if html_all:
        loads = html.count("window.Plotly = Plotly")
        if loads != 1:
            problems.append(f"{name}: plotly.js written {loads} times, expected once")
        if re.search(r'<script[^>]+src="https?:', html):
            problems.append(f"{name}: a script is loaded from the network")
        wants_heatmap = any("heatmap" in kind for kind in expect.get("figures", {}))
        if wants_heatmap and '"type":"heatmap"' not in html:
            problems.append(f"{name}: no heatmap trace in the outputs")
    check_numbers(name, html, problems)
    return problems


def execute(path, out_dir):
    cmd = [
        sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
        f"--ExecutePreprocessor.timeout={TIMEOUT_S}",
        "--ExecutePreprocessor.kernel_name=rust",
        "--output-dir", str(out_dir), str(path),
    ]
    started = time.time()
    proc = subprocess.run(cmd, cwd=NOTEBOOKS, capture_output=True, text=True)
    return proc, time.time() - started


def main(argv):
    out_dir = pathlib.Path(os.environ.get("RKIF_NOTEBOOK_OUT", ROOT / "target" / "notebooks-executed"))
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("EVCXR_TMPDIR", str(pathlib.Path(tempfile.gettempdir()) / "rkif-evcxr-notebooks"))
    pathlib.Path(os.environ["EVCXR_TMPDIR"]).mkdir(parents=True, exist_ok=True)
    names = argv or sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    passed, failed = 0, 0
    for name in names:
        source = NOTEBOOKS / name
        committed = json.loads(source.read_text(encoding="utf-8"))
        problems = []
        for cell in committed.get("cells", []):
            if cell.get("outputs"):
                problems.append(f"{name}: committed with outputs (clear them)")
                break
        proc, seconds = execute(source, out_dir)
        executed = out_dir / name
        if proc.returncode != 0:
            # The cell error comes after nbconvert's own Python traceback.
            tail = proc.stderr.split("CellExecutionError", 1)[-1]
            problems.append(f"{name}: nbconvert exited {proc.returncode}:\n" + tail[-6000:])
        if executed.is_file():
            problems += check(name, json.loads(executed.read_text(encoding="utf-8")))
        elif proc.returncode == 0:
            problems.append(f"{name}: no executed copy at {executed}")
        status = "ok" if not problems else "FAILED"
        print(f"notebook {name}: {status} ({seconds:.0f} s)", flush=True)
        for p in problems:
            print("  " + p.replace("\n", "\n    "), flush=True)
        if problems:
            failed += 1
        else:
            passed += 1
    print(f"notebooks: {passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
