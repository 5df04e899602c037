//! The static report folder that `rkif report runs/a [runs/b ...] --out site/` writes.
//!
//! ```text
//! site/
//!   index.html, main.js, style.css      the page
//!   rkif_viewer.js, rkif_viewer_bg.wasm  the viewer (wasm-bindgen output)
//!   plotly.min.js                        plotly.js, served locally (no CDN)
//!   runs/index.json                      {"schema_version": 1, "runs": [{"name", "path", "files"}]}
//!   runs/<name>/manifest.json, metrics.json, events.jsonl, importance/*.json
//!   runs/<name>/files.json               {"files": [...]}, the run's copied files
//! ```
//!
//! The viewer assets are built ahead of time by `scripts/build-viewer.sh` into
//! `rkif-viewer/dist/` (committed) and embedded here, so writing a report needs no wasm
//! toolchain. `rkif-viewer/dist/source-hash.txt` records the sources they were built from; a
//! test in `rkif-tests` fails when the sources changed and the assets were not rebuilt.
//!
//! Run files are copied as they are, not validated: the viewer reports a bad file by name and
//! shows the rest. Adapters and checkpoints are not copied (large, and not shown).

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::report::run_dir::{EVENTS_FILE, IMPORTANCE_DIR, MANIFEST_FILE, METRICS_FILE};
use crate::{Error, Result};

/// Version of `runs/index.json`'s shape.
pub const SITE_INDEX_VERSION: u32 = 1;

/// The viewer's files: (name in the site, content).
const VIEWER_ASSETS: [(&str, &[u8]); 6] = [
    (
        "index.html",
        include_bytes!("../../../rkif-viewer/dist/index.html"),
    ),
    (
        "main.js",
        include_bytes!("../../../rkif-viewer/dist/main.js"),
    ),
    (
        "style.css",
        include_bytes!("../../../rkif-viewer/dist/style.css"),
    ),
    (
        "rkif_viewer.js",
        include_bytes!("../../../rkif-viewer/dist/rkif_viewer.js"),
    ),
    (
        "rkif_viewer_bg.wasm",
        include_bytes!("../../../rkif-viewer/dist/rkif_viewer_bg.wasm"),
    ),
    (
        "plotly.min.js",
        include_bytes!("../../../rkif-viewer/dist/plotly.min.js"),
    ),
];

/// One run as listed in `runs/index.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiteRun {
    /// The run's folder name in the site (unique; from its source folder's name).
    pub name: String,
    /// Its folder relative to the site root: `runs/<name>`.
    pub path: String,
    /// The copied files, relative to the run folder, sorted.
    pub files: Vec<String>,
}

/// What [`write_site`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiteIndex {
    /// [`SITE_INDEX_VERSION`].
    pub schema_version: u32,
    /// The runs, in the order given.
    pub runs: Vec<SiteRun>,
}

/// Writes a report site for the run folders `runs` into `out` (created if needed; files the
/// site writes are replaced, others left alone). Returns the index it wrote to
/// `runs/index.json`.
///
/// Each run must be a folder; its artifacts that exist are copied (a run missing
/// `metrics.json` still gets a page, which says so). Errors name the path that failed.
pub fn write_site(runs: &[impl AsRef<Path>], out: &Path) -> Result<SiteIndex> {
    fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    for (name, bytes) in VIEWER_ASSETS {
        write_file(&out.join(name), bytes)?;
    }
    let mut index = SiteIndex {
        schema_version: SITE_INDEX_VERSION,
        runs: Vec::new(),
    };
    for run in runs {
        let source = run.as_ref();
        if !source.is_dir() {
            return Err(Error::io(
                source,
                std::io::Error::new(std::io::ErrorKind::NotFound, "not a run folder"),
            ));
        }
        let name = unique_name(&folder_name(source), &index.runs);
        let path = format!("runs/{name}");
        let target = out.join(&path);
        let files = copy_run(source, &target)?;
        // Lets `?run=<url of this folder>` find the importance snapshots too.
        let listing = serde_json::json!({ "files": files });
        write_file(&target.join("files.json"), listing.to_string().as_bytes())?;
        index.runs.push(SiteRun { name, path, files });
    }
    let runs_dir = out.join("runs");
    fs::create_dir_all(&runs_dir).map_err(|e| Error::io(&runs_dir, e))?;
    let index_path = runs_dir.join("index.json");
    let json = serde_json::to_vec_pretty(&index)
        .map_err(|e| Error::format(&index_path, format!("cannot serialise: {e}")))?;
    write_file(&index_path, &json)?;
    Ok(index)
}

/// The site folder name of a run: its folder name with anything but `A-Z a-z 0-9 . _ -`
/// replaced by `_` (a URL path segment and a file name on every system).
fn folder_name(source: &Path) -> String {
    let raw = source
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let clean: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match clean.trim_matches('.') {
        "" => "run".to_owned(),
        trimmed => trimmed.to_owned(),
    }
}

/// `name`, or `name-2`, `name-3`, ... when an earlier run took it.
fn unique_name(name: &str, taken: &[SiteRun]) -> String {
    let free = |candidate: &str| taken.iter().all(|r| r.name != candidate);
    if free(name) {
        return name.to_owned();
    }
    (2..)
        .map(|n| format!("{name}-{n}"))
        .find(|candidate| free(candidate))
        .unwrap_or_else(|| name.to_owned())
}

/// Copies the artifacts of `source` that exist into `target`; returns their relative paths.
fn copy_run(source: &Path, target: &Path) -> Result<Vec<String>> {
    fs::create_dir_all(target).map_err(|e| Error::io(target, e))?;
    let mut files = Vec::new();
    for name in [MANIFEST_FILE, METRICS_FILE, EVENTS_FILE] {
        let from = source.join(name);
        if from.is_file() {
            copy_file(&from, &target.join(name))?;
            files.push(name.to_owned());
        }
    }
    let importance = source.join(IMPORTANCE_DIR);
    if importance.is_dir() {
        let target_dir = target.join(IMPORTANCE_DIR);
        fs::create_dir_all(&target_dir).map_err(|e| Error::io(&target_dir, e))?;
        let reader = fs::read_dir(&importance).map_err(|e| Error::io(&importance, e))?;
        let mut names = Vec::new();
        for entry in reader {
            let entry = entry.map_err(|e| Error::io(&importance, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Only snapshot files: no hidden temp files, nothing that needs URL escaping.
            let plain = name.ends_with(".json")
                && !name.starts_with('.')
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if plain && entry.path().is_file() {
                names.push(name);
            }
        }
        names.sort();
        for name in names {
            copy_file(&importance.join(&name), &target_dir.join(&name))?;
            files.push(format!("{IMPORTANCE_DIR}/{name}"));
        }
    }
    Ok(files)
}

fn copy_file(from: &Path, to: &Path) -> Result<()> {
    let bytes = fs::read(from).map_err(|e| Error::io(from, e))?;
    write_file(to, &bytes)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

/// The viewer assets' names, for tests and packaging.
pub fn viewer_asset_names() -> Vec<&'static str> {
    VIEWER_ASSETS.iter().map(|(name, _)| *name).collect()
}

/// Where the site's index of runs lives, relative to the site root.
pub fn index_path(out: &Path) -> PathBuf {
    out.join("runs").join("index.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cleaned_and_made_unique() {
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("a b<script>");
        fs::create_dir(&odd).unwrap();
        assert_eq!(folder_name(&odd), "a_b_script_");
        let taken = vec![SiteRun {
            name: "a".into(),
            path: "runs/a".into(),
            files: vec![],
        }];
        assert_eq!(unique_name("a", &taken), "a-2");
        assert_eq!(unique_name("b", &taken), "b");
    }

    #[test]
    fn site_holds_viewer_and_copied_artifacts() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("demo");
        fs::create_dir_all(run.join("importance")).unwrap();
        fs::create_dir_all(run.join("adapters")).unwrap();
        fs::write(run.join("manifest.json"), b"{}").unwrap();
        fs::write(run.join("metrics.json"), b"{\"cut").unwrap();
        fs::write(run.join("importance/task-000-end.json"), b"{}").unwrap();
        fs::write(run.join("importance/.task-000-end.json.tmp-1-0"), b"").unwrap();
        fs::write(run.join("adapters/big.safetensors"), b"x").unwrap();
        let out = dir.path().join("site");
        let index = write_site(&[&run, &run], &out).unwrap();
        assert_eq!(index.runs.len(), 2);
        assert_eq!(index.runs[1].path, "runs/demo-2");
        assert_eq!(
            index.runs[0].files,
            [
                "manifest.json",
                "metrics.json",
                "importance/task-000-end.json"
            ]
        );
        // Copied as is: the viewer, not the writer, reports the truncated file.
        assert_eq!(
            fs::read(out.join("runs/demo/metrics.json")).unwrap(),
            b"{\"cut"
        );
        assert!(!out.join("runs/demo/adapters").exists());
        let listing: serde_json::Value =
            serde_json::from_slice(&fs::read(out.join("runs/demo/files.json")).unwrap()).unwrap();
        assert_eq!(listing["files"][2], "importance/task-000-end.json");
        for name in viewer_asset_names() {
            assert!(out.join(name).is_file(), "{name}");
        }
        let written: serde_json::Value =
            serde_json::from_slice(&fs::read(index_path(&out)).unwrap()).unwrap();
        assert_eq!(written["runs"][1]["name"], "demo-2");
    }

    #[test]
    fn a_missing_run_folder_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_site(&[dir.path().join("nope")], &dir.path().join("site")).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
