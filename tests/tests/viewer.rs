//! The report site in a real headless Chromium: two realistic runs, a hostile one and a
//! malformed one, written with the `report` API, served on 127.0.0.1 and driven by
//! `tests/viewer/e2e.mjs` (Playwright). Also checks that the committed viewer assets are
//! built from the current sources.
//!
//! The browser test needs `tests/viewer/node_modules` (`scripts/viewer-setup.sh`) and
//! Chromium; without them it says so and passes, unless `RKIF_REQUIRE_BROWSER=1` (CI).
//! Screenshots go to `target/viewer-screenshots/`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use rkif_core::report::figures::{
    accuracy_heatmap, comparison_heatmaps, element_map, forgetting_bars, fusion_shares,
    importance_layers, training_curves,
};
use rkif_core::report::site::write_site;
use rkif_core::report::{MetricsFile, RunDir};
use rkif_tests::fake_run::FakeRun;
use rkif_tests::static_server::StaticServer;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The files the viewer is built from, as `scripts/viewer-source-files.sh` lists them.
fn viewer_sources(root: &Path) -> Vec<String> {
    let mut files: Vec<String> = [
        "rkif-viewer/Cargo.toml",
        "rkif-core/src/error.rs",
        "rkif-viewer/plotly/entry.js",
        "rkif-viewer/plotly/package.json",
        "rkif-viewer/plotly/package-lock.json",
    ]
    .map(str::to_owned)
    .to_vec();
    let mut folders: Vec<PathBuf> = [
        "rkif-viewer/src",
        "rkif-viewer/static",
        "rkif-core/src/report",
        "rkif-core/src/eval",
    ]
    .iter()
    .map(|f| root.join(f))
    .collect();
    while let Some(dir) = folders.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.file_name().is_some_and(|n| n != "site.rs") {
                files.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    files.sort();
    files
}

/// `sha256sum` of each file, then `sha256sum` of that listing (what build-viewer.sh records).
fn source_hash(root: &Path) -> String {
    let hex = |bytes: &[u8]| -> String {
        Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let listing: String = viewer_sources(root)
        .iter()
        .map(|f| format!("{}  {f}\n", hex(&fs::read(root.join(f)).unwrap())))
        .collect();
    hex(listing.as_bytes())
}

#[test]
fn committed_viewer_assets_match_their_sources() {
    let root = repo_root();
    let recorded = fs::read_to_string(root.join("rkif-viewer/dist/source-hash.txt")).unwrap();
    assert_eq!(
        recorded.trim(),
        source_hash(&root),
        "rkif-viewer/dist/ is stale: run scripts/build-viewer.sh and commit rkif-viewer/dist/"
    );
    let wasm = fs::metadata(root.join("rkif-viewer/dist/rkif_viewer_bg.wasm")).unwrap();
    assert!(
        wasm.len() <= 1 << 20,
        "the wasm is {} bytes, over 1 MiB",
        wasm.len()
    );
}

/// The viewer's plotly.js is a partial bundle (rkif-viewer/plotly/entry.js): a figure whose
/// trace type it lacks would draw nothing. Every figure the viewer draws, made from a fake
/// run, must use only the trace types the committed bundle registers.
#[test]
fn bundled_plotly_registers_every_trace_type_the_figures_use() {
    let bundle = fs::read_to_string(repo_root().join("rkif-viewer/dist/plotly.min.js")).unwrap();
    let registered = |kind: &str| bundle.contains(&format!("moduleType:\"trace\",name:\"{kind}\""));
    let tmp = tempfile::tempdir().unwrap();
    let folder = FakeRun::standard("kif", "recurrent-kif", 0.0)
        .write(tmp.path(), "a")
        .unwrap();
    let run = RunDir::open(&folder).unwrap();
    let metrics = run.load_metrics().unwrap();
    let events = run.load_events().unwrap();
    let entry = run.importance_entries().unwrap().remove(0);
    let snapshot = run.load_importance(entry.task, entry.round).unwrap();
    let map = snapshot
        .maps
        .first()
        .expect("the fake run's snapshots have element maps");
    let figures = [
        accuracy_heatmap(&metrics),
        forgetting_bars(&metrics),
        comparison_heatmaps(&[("a", &metrics), ("b", &metrics)]),
        importance_layers(&snapshot),
        element_map(map),
        fusion_shares(&events),
        training_curves(&events),
    ];
    let mut kinds: Vec<&str> = figures
        .iter()
        .flat_map(|figure| &figure.data)
        // plotly's default trace type is scatter.
        .map(|trace| trace["type"].as_str().unwrap_or("scatter"))
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(
        kinds,
        ["bar", "heatmap", "scatter"],
        "the trace types the figures use"
    );
    for kind in kinds {
        assert!(
            registered(kind),
            "rkif-viewer/dist/plotly.min.js does not register `{kind}`: add it to rkif-viewer/plotly/entry.js"
        );
    }
    assert!(!registered("pie"), "the bundle is not the partial one");
}

/// Two good runs, a hostile one (markup in every text field), and a malformed one.
fn write_runs(parent: &Path) -> Vec<PathBuf> {
    let a = FakeRun::standard("kif-order1", "recurrent-kif", 0.05)
        .write(parent, "a")
        .unwrap();
    let b = FakeRun::standard("seqlora-order1", "seq-lora", -0.1)
        .write(parent, "b")
        .unwrap();
    let mut hostile =
        FakeRun::standard("<script>window.__pwned='name'</script>", "<b>kif</b>", 0.0);
    hostile.tasks = vec![
        "<img src=x onerror=\"window.__pwned='task'\">".into(),
        "%{x}<a href=\"javascript:alert(1)\">amazon</a>".into(),
        "yahoo & co".into(),
        "<svg onload=\"window.__pwned='svg'\">".into(),
    ];
    hostile.kinds = ["<i>q</i>".into(), "v".into()];
    hostile.benchmark = "<iframe src=\"http://example.invalid/\"></iframe>".into();
    let hostile = hostile.write(parent, "hostile").unwrap();
    let bad = FakeRun::standard("malformed-run", "recurrent-kif", 0.0)
        .write(parent, "malformed")
        .unwrap();
    let metrics = fs::read(bad.join("metrics.json")).unwrap();
    fs::write(bad.join("metrics.json"), &metrics[..metrics.len() / 2]).unwrap();
    fs::remove_file(bad.join("events.jsonl")).unwrap();
    let newer = bad.join("importance/task-000-round-0002.json");
    let text = fs::read_to_string(&newer).unwrap();
    fs::write(
        &newer,
        text.replacen("\"schema_version\": 1", "\"schema_version\": 99", 1),
    )
    .unwrap();
    vec![a, b, hostile, bad]
}

fn browser_ready() -> Option<PathBuf> {
    let script = repo_root().join("tests/viewer/e2e.mjs");
    let module = repo_root().join("tests/viewer/node_modules/playwright-core");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let ok = module.is_dir()
        && Path::new(&chromium).exists()
        && Command::new("node").arg("--version").output().is_ok();
    if ok {
        return Some(script);
    }
    let why = "the browser test needs node, Chromium and tests/viewer/node_modules (scripts/viewer-setup.sh)";
    assert!(
        std::env::var("RKIF_REQUIRE_BROWSER").as_deref() != Ok("1"),
        "{why}"
    );
    eprintln!("SKIPPED: {why}");
    None
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let dir = target.join("viewer-screenshots");
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn percent(value: Option<f64>) -> String {
    rkif_core::report::figures::percent(value)
}

/// The metric rows the page should show for `metrics`: name and value text.
fn expected_metric_values(metrics: &MetricsFile) -> Vec<(String, String)> {
    vec![
        ("OP".into(), percent(metrics.op.value)),
        ("BWT".into(), percent(metrics.bwt.value)),
        ("FWT".into(), percent(metrics.fwt.value)),
        ("F".into(), percent(metrics.forgetting.mean.value)),
    ]
}

fn shown_metric_values(rows: &Value) -> Vec<(String, String)> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().to_owned(),
                r[1].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A zip (stored entries, no compression) of every file under `folder`, with paths under
/// `folder`'s name, as `zip -r -0` makes one.
fn zip_folder(folder: &Path) -> Vec<u8> {
    let top = folder.file_name().unwrap().to_string_lossy().into_owned();
    let mut files = Vec::new();
    let mut pending = vec![folder.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let name = format!("{top}/{}", path.strip_prefix(folder).unwrap().display());
                files.push((name, fs::read(&path).unwrap()));
            }
        }
    }
    let (mut out, mut directory) = (Vec::new(), Vec::new());
    for (name, data) in &files {
        let offset = out.len() as u32;
        let (size, len) = (
            (data.len() as u32).to_le_bytes(),
            (name.len() as u16).to_le_bytes(),
        );
        // Local header: version 20, no flags, method 0 (stored), zero time and CRC.
        out.extend(0x0403_4b50u32.to_le_bytes());
        out.extend([20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend(size.iter().chain(&size).chain(&len).chain(&[0, 0]));
        out.extend(name.as_bytes());
        out.extend(data);
        directory.extend(0x0201_4b50u32.to_le_bytes());
        directory.extend([20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        directory.extend(size.iter().chain(&size).chain(&len).chain(&[0; 12]));
        directory.extend(offset.to_le_bytes());
        directory.extend(name.as_bytes());
    }
    let (at, len, count) = (out.len() as u32, directory.len() as u32, files.len() as u16);
    out.extend(directory);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0, 0, 0, 0]);
    out.extend(count.to_le_bytes().iter().chain(&count.to_le_bytes()));
    out.extend(
        len.to_le_bytes()
            .iter()
            .chain(&at.to_le_bytes())
            .chain(&[0, 0]),
    );
    out
}

#[test]
fn report_site_renders_in_headless_chromium() {
    let Some(script) = browser_ready() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let runs = write_runs(&tmp.path().join("runs"));
    let site = tmp.path().join("site");
    let index = write_site(&runs, &site).unwrap();
    assert_eq!(index.runs.len(), 4);
    // A run outside the index, for `?run=<url>`.
    write_site(&runs[1..2], &tmp.path().join("site-extra")).unwrap();
    fs::rename(tmp.path().join("site-extra/runs"), site.join("extra")).unwrap();
    let metrics_a = RunDir::open(&runs[0]).unwrap().load_metrics().unwrap();
    let metrics_b = RunDir::open(&runs[1]).unwrap().load_metrics().unwrap();

    let server = StaticServer::start(&site).unwrap();
    let shots = screenshot_dir();
    let dropped: Vec<PathBuf> = ["manifest.json", "metrics.json", "events.jsonl"]
        .iter()
        .map(|f| runs[1].join(f))
        .chain([runs[1].join("importance/task-001-end.json")])
        .collect();
    let zip = tmp.path().join("a.zip");
    fs::write(&zip, zip_folder(&runs[0])).unwrap();
    let output = Command::new("node")
        .arg(&script)
        .arg(&server.url)
        .arg(&shots)
        .arg(&zip)
        .args(&dropped)
        .output()
        .unwrap();
    drop(server);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "e2e.mjs failed:\n{stderr}");
    let seen: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("e2e.mjs printed no JSON ({e}):\n{stderr}"));
    eprintln!("status: {}", seen["status"]);

    assert_eq!(seen["ready"], "true", "{seen}");
    assert_eq!(
        seen["requests_elsewhere"],
        Value::Array(vec![]),
        "no request may leave the page"
    );
    assert_eq!(
        seen["console_errors"],
        Value::Array(vec![]),
        "{}",
        seen["console_errors"]
    );
    assert_eq!(
        seen["pwned"],
        Value::Null,
        "markup in a run file ran as script"
    );
    assert_eq!(seen["injected"], 0, "markup in a run file became elements");
    let labels = strings(&seen["runs"]);
    assert_eq!(
        labels,
        [
            "kif-order1",
            "seqlora-order1",
            "<script>window.__pwned='name'</script>",
            "malformed-run"
        ]
    );

    // Problems: each names the file.
    let problems = strings(&seen["problems"]);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].starts_with("runs/malformed/metrics.json: truncated JSON"),
        "{problems:?}"
    );
    assert_eq!(
        problems[1],
        "runs/malformed/events.jsonl: missing from the run"
    );

    // Summary and metrics of run a: the numbers of its metrics.json.
    let views = &seen["views"];
    let summary: Vec<Vec<String>> = views["summary"]
        .as_array()
        .unwrap()
        .iter()
        .map(strings)
        .collect();
    assert!(
        summary.contains(&vec!["method".into(), "recurrent-kif".into()]),
        "{summary:?}"
    );
    assert!(summary.contains(&vec!["device".into(), "cpu".into()]));
    assert!(summary.contains(&vec!["seeds".into(), "init=42, shuffle=7".into()]));
    assert_eq!(
        shown_metric_values(&views["metrics"]),
        expected_metric_values(&metrics_a)
    );
    let bwt_cells = views["metrics"][1][4].as_str().unwrap();
    assert_eq!(bwt_cells, "a[3][0] a[0][0] a[3][1] a[1][1] a[3][2] a[2][2]");

    // The heatmap shows every evaluated cell's value and the task names.
    let matrix_text = strings(&views["matrix_text"]);
    for row in &metrics_a.accuracy {
        for cell in row.iter().flatten() {
            let text = percent(Some(*cell));
            assert!(matrix_text.contains(&text), "{text} not in {matrix_text:?}");
        }
    }
    assert!(
        matrix_text.contains(&"3: agnews".to_owned()),
        "{matrix_text:?}"
    );
    let forgetting = strings(&views["forgetting_text"]);
    let f0 = percent(metrics_a.forgetting.per_task[0].value);
    assert!(forgetting.contains(&f0), "{f0} not in {forgetting:?}");

    // Importance: task 1 has rounds 2, 4, 6 and the end; the slider walks them.
    let imp = &views["importance"];
    assert_eq!(imp["max"], "3");
    assert_eq!(
        strings(&imp["labels"]),
        ["round 2", "round 4", "end of task"]
    );
    assert_eq!(strings(&imp["steps"]), ["16", "32", "48"]);
    assert!(strings(&imp["layer_text"]).contains(&"q.A".to_owned()));
    let map_title = imp["map_title"].as_str().unwrap_or_default();
    assert!(
        map_title.contains("8x64 matrix as 8x32 block means"),
        "{map_title}"
    );

    // Fusion: four shares and the overlap; curves: loss, validation loss, learning rate.
    assert_eq!(views["fusion_traces"], 5);
    assert_eq!(views["curves_traces"], 3);

    // Comparison: the three runs with readable metrics, side by side.
    let compare: Vec<Vec<String>> = views["compare"]
        .as_array()
        .unwrap()
        .iter()
        .map(strings)
        .collect();
    assert_eq!(compare.len(), 3, "{compare:?}");
    assert_eq!(compare[1][0], "seqlora-order1");
    assert_eq!(compare[1][2], percent(metrics_b.op.value));
    assert_eq!(views["compare_subplots"], 3);

    // Hostile run: its markup shown as text, in the DOM and in the plots.
    let hostile = &seen["each_run"][2];
    let rows: Vec<Vec<String>> = hostile["summary"]
        .as_array()
        .unwrap()
        .iter()
        .map(strings)
        .collect();
    assert!(
        rows.contains(&vec!["method".into(), "<b>kif</b>".into()]),
        "{rows:?}"
    );
    assert!(rows.contains(&vec![
        "benchmark".into(),
        "<iframe src=\"http://example.invalid/\"></iframe>".into()
    ]));
    let svg = strings(&hostile["svg_text"]);
    assert!(
        svg.iter().any(|t| t.contains("<img src=x onerror=")),
        "task name not shown as text: {svg:?}"
    );
    assert!(svg.iter().any(|t| t.contains("%{x}<a href=")), "{svg:?}");

    // Malformed run: its summary still shows, the matrix says why it is missing.
    let bad = &seen["each_run"][3];
    let unavailable = strings(&bad["unavailable"]);
    assert!(
        unavailable
            .iter()
            .any(|t| t.contains("metrics.json could not be read")),
        "{unavailable:?}"
    );
    assert!(unavailable
        .iter()
        .any(|t| t.contains("events.jsonl could not be read")));
    assert!(
        unavailable
            .iter()
            .any(|t| t
                .contains("runs/malformed/importance/task-000-round-0002.json: schema version 99")),
        "{unavailable:?}"
    );
    assert!(!bad["summary"].as_array().unwrap().is_empty());

    // ?run=<url> adds a run from a URL and selects it.
    let url_run = &seen["url_run"];
    assert_eq!(url_run["selected"], "seqlora-order1");
    assert_eq!(
        shown_metric_values(&url_run["metrics"]),
        expected_metric_values(&metrics_b)
    );

    // Dropped files become a run of their own.
    let dropped = &seen["dropped"];
    assert_eq!(dropped["selected"], "seqlora-order1");
    assert_eq!(
        shown_metric_values(&dropped["metrics"]),
        expected_metric_values(&metrics_b)
    );
    assert_eq!(strings(&dropped["snapshots"]), ["1 amazon"]);

    // A dropped zip of a run folder: the whole run, snapshots included.
    let zipped = &seen["zipped"];
    assert_eq!(zipped["selected"], "kif-order1");
    assert_eq!(
        shown_metric_values(&zipped["metrics"]),
        expected_metric_values(&metrics_a)
    );
    assert_eq!(strings(&zipped["snapshots"]).len(), 4);
    assert_eq!(zipped["problems"], Value::Array(vec![]));

    for name in [
        "summary",
        "matrix",
        "importance",
        "fusion",
        "curves",
        "compare",
        "run-2",
        "run-3",
        "dropped",
    ] {
        assert!(
            shots.join(format!("{name}.png")).is_file(),
            "no screenshot {name}"
        );
    }
}

/// Writes the benchmark site (a 15-task, 150-round run) to `RKIF_VIEWER_BENCH_OUT`; run by
/// `scripts/viewer-bench.sh`, not part of the test suite.
#[test]
#[ignore = "writes the benchmark site for scripts/viewer-bench.sh"]
fn write_benchmark_site() {
    let out = PathBuf::from(std::env::var("RKIF_VIEWER_BENCH_OUT").expect("RKIF_VIEWER_BENCH_OUT"));
    let runs = out.join("source-runs");
    let _ = fs::remove_dir_all(&out);
    let mut run = FakeRun::standard("long-15", "recurrent-kif", 0.0);
    run.tasks = (0..15).map(|i| format!("task-{i:02}")).collect();
    run.rounds = 150;
    run.layers = 24;
    run.snapshot_every = 10;
    let folder = run.write(&runs, "long").unwrap();
    write_site(&[folder], &out.join("site")).unwrap();
}
