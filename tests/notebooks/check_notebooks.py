#!/usr/bin/env python3
"""Executes every notebook in notebooks/ headless with the evcxr kernel and checks the outputs.

    python3 tests/notebooks/check_notebooks.py [NAME ...]

Every cell runs (`--allow-errors`), then every output is searched for errors and panics (a panic
inside a cell does not make nbconvert fail), and each notebook's rich outputs are checked: the
tables and figures it should show are there, every figure's JSON parses and its numbers lie in
range (accuracies in [0, 100] %, losses finite and positive, the four fusion shares adding up to
1), a fusing run's training curves show its replay (outer-step) losses, the tables' numbers parse
and lie in range, every accuracy table's columns are the tasks the task list shows (task names
and counts are read from the outputs, never written here), plotly.js is written once and nothing
comes from a URL.
The executed copies go to $RKIF_NOTEBOOK_OUT (default target/notebooks-executed/).

$EVCXR_TMPDIR (default target/evcxr-notebooks) keeps the kernel's compiled dependencies, so the
second run is fast. evcxr makes a cargo package there; the workspace excludes `target` so that
cargo does not take it for an unlisted member.

Exit status 0 when every notebook ran clean; the last line is `N passed, N failed`.
"""
import json
import os
import pathlib
import re
import subprocess
import sys
import time

import make_notebooks

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
TIMEOUT_S = int(os.environ.get("RKIF_NOTEBOOK_CELL_TIMEOUT", "1800"))

# Minimum count of each figure kind (data-rkif-figure) and each block (data-rkif) per notebook.
EXPECT = {
    "01-quickstart.ipynb": {
        "figures": {"accuracy-heatmap": 3, "accuracy-comparison": 1, "forgetting-bars": 2,
                    "training-curves": 1, "fusion-shares": 1},
        "blocks": {"tasks": 1, "session": 1, "task-plan": 1, "accuracy-matrix": 3,
                   "comparison": 1, "run-summary": 1, "run-charts": 1},
    },
    "02-identify.ipynb": {
        "figures": {"loss-curve": 2, "importance-layers": 1, "element-map": 2},
        "blocks": {"eval-row": 1, "task-plan": 1, "steps": 2, "importance": 2,
                   "importance-snapshot": 1, "element-maps": 1},
    },
    "03-fuse.ipynb": {
        "figures": {"training-curves": 1, "fusion-shares": 1},
        "blocks": {"old-task-loss": 2, "fusion": 1, "round-weights": 1, "run-summary": 1,
                   "run-charts": 1},
    },
    "04-compare.ipynb": {
        "figures": {"accuracy-comparison": 1, "forgetting-bars": 5},
        "blocks": {"comparison": 1, "accuracy-table": 5},
    },
    "05-real-model.ipynb": {
        "figures": {"importance-layers": 1, "loss-curve": 1, "accuracy-heatmap": 2},
        "blocks": {"session": 1, "task-plan": 1, "eval-row": 1, "steps": 1,
                   "importance-snapshot": 1, "fusion": 1, "accuracy-matrix": 1},
    },
}

# Figure kinds drawn as heatmaps: each must hold at least one heatmap trace with a number.
HEATMAPS = {"accuracy-heatmap", "accuracy-comparison", "importance-layers", "element-map"}

ERROR_PATTERNS = [
    re.compile(r"panicked at"),
    re.compile(r"^error(\[E\d+\])?:", re.M),
    re.compile(r"Child process terminated"),
    re.compile(r"^Error: ", re.M),
    re.compile(r"^Error\b", re.M),
    re.compile(r"RUST_BACKTRACE"),
]

ANSI = re.compile(r"\x1b\[[0-9;]*m")

# A figure written by display::figure_html: its kind and its {"data", "layout"} JSON.
FIGURE = re.compile(
    r'data-rkif-figure="([^"]+)"[^>]*></div><script type="text/javascript">'
    r'\(function\(\)\{var fig=(.*?);var tries=0;', re.S)


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
                text = out.get("ename", "") + ": " + out.get("evalue", "") + "\n" + "\n".join(out.get("traceback", []))
                yield i, "error", ANSI.sub("", text)
            else:
                for mime, value in out.get("data", {}).items():
                    text = "".join(value) if isinstance(value, list) else str(value)
                    yield i, f"{kind}:{mime}", text


def numbers(values):
    """The numbers of a (nested) list; None stays None, anything else is an error."""
    out = []
    for v in values if isinstance(values, list) else [values]:
        if isinstance(v, list):
            out += numbers(v)
        elif v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)):
            out.append(v)
        else:
            raise ValueError(f"not a number: {v!r}")
    return out


def in_range(name, what, values, lo, hi, problems):
    for v in values:
        if v is None:
            continue
        if v != v or not lo <= v <= hi:
            problems.append(f"{name}: {what} value {v} outside [{lo}, {hi}]")
            return


def check_figure(name, kind, fig, problems):
    """The figure's traces hold numbers in the range its kind allows."""
    data = fig.get("data")
    if not isinstance(data, list) or not isinstance(fig.get("layout"), dict):
        problems.append(f"{name}: figure {kind} is not {{data: [...], layout: {{...}}}}")
        return
    try:
        if kind in HEATMAPS:
            maps = [t for t in data if t.get("type") == "heatmap"]
            z = [v for t in maps for v in numbers(t.get("z", []))]
            if not any(v is not None for v in z):
                problems.append(f"{name}: figure {kind} has no heatmap with a number")
            if kind.startswith("accuracy"):
                in_range(name, f"{kind} z", z, 0.0, 100.0, problems)
            else:
                in_range(name, f"{kind} z", z, 0.0, float("inf"), problems)
        elif kind == "forgetting-bars":
            in_range(name, kind, numbers(data[0].get("y", [])), -100.0, 100.0, problems)
        elif kind in ("loss-curve", "training-curves"):
            # Inner-step, replay (outer-step) and validation losses: finite and positive.
            losses = [t for t in data if "loss" in str(t.get("name", ""))]
            ys = [v for t in losses for v in numbers(t.get("y", []))]
            if kind == "loss-curve" and not ys:
                problems.append(f"{name}: figure {kind} without a loss")
            in_range(name, f"{kind} loss", ys, 0.0, 1e4, problems)
        elif kind == "fusion-shares":
            stacked = [numbers(t.get("y", [])) for t in data if t.get("stackgroup")]
            if len(stacked) != 4 or not stacked[0]:
                problems.append(f"{name}: figure {kind} without the four cases' shares")
                return
            for values in stacked:
                in_range(name, f"{kind} share", values, 0.0, 1.0, problems)
            for r, column in enumerate(zip(*stacked)):
                if abs(sum(column) - 1.0) > 1e-3:
                    problems.append(f"{name}: round {r + 1}'s shares add up to {sum(column)}, not 1")
    except (ValueError, TypeError, AttributeError, IndexError) as e:
        problems.append(f"{name}: figure {kind}: {e}")


def check_numbers(name, html, problems):
    """Every data-value parses; accuracy cells and OP lie in [0, 1], BWT and F in [-1, 1]; losses
    are positive; each table of the four fusion cases adds up to 1."""
    for m in re.finditer(r'data-value="([^"]*)"', html):
        try:
            v = float(m.group(1))
        except ValueError:
            problems.append(f"{name}: data-value {m.group(1)!r} does not parse")
            continue
        if v != v or v in (float("inf"), float("-inf")):
            problems.append(f"{name}: non-finite data-value {m.group(1)}")
    bounds = [("accuracy-table", 0.0, 1.0), ("eval-row", 0.0, 1.0), ("importance", 0.0, 1.0),
              ("importance-snapshot", 0.0, 1.0), ("steps", 0.0, 1e4), ("old-task-loss", 0.0, 1e4)]
    for kind, lo, hi in bounds:
        for table in re.findall(rf'<table data-rkif="{kind}".*?</table>', html, re.S):
            cells = [float(x) for x in re.findall(r'data-value="([^"]*)"', table)]
            if kind in ("accuracy-table", "eval-row", "steps", "old-task-loss") and not cells:
                problems.append(f"{name}: a {kind} table without numbers")
            in_range(name, kind, cells, lo, hi, problems)
    for metric, lo, hi in [("OP", 0.0, 1.0), ("BWT", -1.0, 1.0), ("F", -1.0, 1.0), ("FWT", -1.0, 1.0)]:
        values = [float(v) for v in re.findall(rf'data-metric="{metric}" data-value="([^"]*)"', html)]
        in_range(name, metric, values, lo, hi, problems)
    if "data-rkif=\"accuracy-matrix\"" in html and 'data-metric="OP" data-value=' not in html:
        problems.append(f"{name}: an accuracy matrix without OP")
    for table in re.findall(r'<table data-rkif="fusion-shares".*?</table>', html, re.S):
        shares = [float(x) for x in re.findall(r'data-case="[^"]*" data-value="([^"]*)"', table)]
        if len(shares) != 4 or abs(sum(shares) - 1.0) > 1e-3:
            problems.append(f"{name}: fusion shares {shares} are not four adding up to 1")


def trace_values(fig, prefix):
    """The numbers of the figure's traces whose name starts with `prefix`."""
    return [v for t in fig.get("data", []) if str(t.get("name", "")).startswith(prefix)
            for v in numbers(t.get("y", [])) if v is not None]


def check_run_charts(name, text, problems):
    """A run's charts (one cell's output): when the run fused, its training curves show the
    replay (outer-step) losses that events schema 2 records."""
    if 'data-rkif="run-charts"' not in text:
        return
    figures = {kind: fig for kind, fig in FIGURE.findall(text)}
    if "fusion-shares" not in figures or "training-curves" not in figures:
        return
    try:
        curves = json.loads(figures["training-curves"])
        if not trace_values(curves, "replay loss"):
            problems.append(f"{name}: a fusing run's training curves without replay (outer-step) losses")
        if not trace_values(curves, "training loss"):
            problems.append(f"{name}: a run's training curves without inner-step losses")
    except (json.JSONDecodeError, ValueError, TypeError, AttributeError) as e:
        problems.append(f"{name}: run charts: {e}")


def check_tasks(name, html, problems):
    """Every accuracy table's columns are the tasks of the task list (display::tasks), in its
    order: names and count come from the data, whatever the default benchmark holds."""
    listed = re.findall(r'<table data-rkif="tasks".*?</table>', html, re.S)
    if not listed:
        return
    names = re.findall(r'data-task="([^"]*)"', listed[0])
    if not names:
        problems.append(f"{name}: the task list names no task")
        return
    for table in re.findall(r'<table data-rkif="accuracy-table".*?</table>', html, re.S):
        header = re.search(r"<thead>(.*?)</thead>", table, re.S)
        columns = re.findall(r"<th[^>]*>(.*?)</th>", header.group(1), re.S)[1:] if header else []
        if columns != names:
            problems.append(f"{name}: an accuracy table over {columns}, the task list has {names}")


def check(name, nb):
    problems = []
    html_all = []
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") == "code" and cell.get("execution_count") is None:
            problems.append(f"{name}: cell {i} did not run")
    for i, kind, text in outputs_text(nb):
        if kind == "error":
            problems.append(f"{name}: cell {i} raised: {text[:3000]}")
            continue
        # plotly.js and the figures' scripts are code, not messages.
        shown = re.sub(r"<script.*?</script>", "", text, flags=re.S) if kind.endswith("html") else text
        for pat in ERROR_PATTERNS:
            if pat.search(shown):
                problems.append(f"{name}: cell {i} ({kind}) shows an error: {ANSI.sub('', shown)[:3000]}")
                break
        if kind.endswith("text/html"):
            html_all.append(text)
            check_run_charts(name, text, problems)
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
    figures = FIGURE.findall(html)
    if html.count("data-rkif-figure=") != len(figures):
        problems.append(f"{name}: {html.count('data-rkif-figure=')} figure divs but {len(figures)} figure scripts")
    for kind, text in figures:
        try:
            fig = json.loads(text)
        except json.JSONDecodeError as e:
            problems.append(f"{name}: figure {kind}: its JSON does not parse ({e})")
            continue
        check_figure(name, kind, fig, problems)
    if html_all:
        loads = html.count("window.Plotly = Plotly")
        if loads != 1:
            problems.append(f"{name}: plotly.js written {loads} times, expected once")
        if re.search(r'<script[^>]+src=', html):
            problems.append(f"{name}: a script is loaded from a URL")
        # plotly.js itself names its CDN (for map data, unused here): look outside it.
        at = html.find("window.Plotly = Plotly")
        start, end = html.rfind("<script", 0, at), html.find("</script>", at)
        ours = html[:start] + html[end:] if at >= 0 and start >= 0 and end >= 0 else html
        if re.search(r'cdn\.plot\.ly|cdnjs|jsdelivr|unpkg', ours):
            problems.append(f"{name}: a CDN is named in the outputs")
    check_numbers(name, html, problems)
    check_tasks(name, html, problems)
    return problems


def execute(path, out_dir):
    cmd = [
        sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
        f"--ExecutePreprocessor.timeout={TIMEOUT_S}",
        "--ExecutePreprocessor.kernel_name=rust",
        # Run every cell even after an error: the checks below report each failing cell.
        "--allow-errors",
        "--output-dir", str(out_dir), str(path),
    ]
    started = time.time()
    proc = subprocess.run(cmd, cwd=NOTEBOOKS, capture_output=True, text=True)
    return proc, time.time() - started


def main(argv):
    out_dir = pathlib.Path(os.environ.get("RKIF_NOTEBOOK_OUT", ROOT / "target" / "notebooks-executed"))
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("EVCXR_TMPDIR", str(ROOT / "target" / "evcxr-notebooks"))
    pathlib.Path(os.environ["EVCXR_TMPDIR"]).mkdir(parents=True, exist_ok=True)
    names = argv or sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    passed, failed = 0, 0
    for name in names:
        source = NOTEBOOKS / name
        text = source.read_text(encoding="utf-8")
        committed = json.loads(text)
        problems = []
        if name in make_notebooks.NOTEBOOKS and text != make_notebooks.render(name):
            problems.append(f"{name}: differs from tests/notebooks/make_notebooks.py (rerun it)")
        for cell in committed.get("cells", []):
            if cell.get("outputs"):
                problems.append(f"{name}: committed with outputs (clear them)")
                break
        proc, seconds = execute(source, out_dir)
        executed = out_dir / name
        if proc.returncode != 0:
            # The cell error comes after nbconvert's own Python traceback.
            tail = ANSI.sub("", proc.stderr.split("CellExecutionError", 1)[-1])
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
