//! Unit tests in headless Chromium (wasm-bindgen-test):
//! `CHROMEDRIVER=/usr/bin/chromedriver cargo test -p rkif-viewer --target wasm32-unknown-unknown`
//! (`.cargo`-free: scripts/viewer-test.sh sets the runner).
#![cfg(target_family = "wasm")]

use std::collections::BTreeMap;

use rkif_core::report::figures::Figure;
use rkif_viewer::dom;
use rkif_viewer::run::RunData;
use rkif_viewer::zip::{read_zip, strip_common_folder};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
fn markup_in_run_text_stays_text() {
    let doc = dom::document().unwrap();
    let hostile = "<img src=x onerror=\"window.__pwned=1\">";
    let e = dom::text(&doc, "span", "", hostile).unwrap();
    assert_eq!(e.child_element_count(), 0);
    assert_eq!(e.text_content().unwrap(), hostile);
    assert!(e.inner_html().starts_with("&lt;img"), "{}", e.inner_html());
}

#[wasm_bindgen_test]
fn truncated_metrics_are_named_in_the_browser_too() {
    let mut files = BTreeMap::new();
    files.insert(
        "manifest.json".to_owned(),
        Ok(b"{\"schema_version\": 1, \"run_name\"".to_vec()),
    );
    files.insert(
        "metrics.json".to_owned(),
        Ok(b"{\"schema_version\": 7}".to_vec()),
    );
    let run = RunData::parse("runs/z", &files);
    assert!(
        run.problems[0].starts_with("runs/z/manifest.json: truncated JSON"),
        "{:?}",
        run.problems
    );
    assert!(
        run.problems[1].contains("runs/z/metrics.json: schema version 7 is newer"),
        "{:?}",
        run.problems
    );
    assert_eq!(run.problems[2], "runs/z/events.jsonl: missing from the run");
}

#[wasm_bindgen_test]
fn deflated_zip_entries_inflate() {
    // Method 8 (deflate) with a stored deflate block inside.
    let data = br#"{"a": 1}"#;
    let deflated = stored_deflate(data);
    let zip = zip_with(b"run/manifest.json", &deflated, data.len());
    let files = strip_common_folder(read_zip("z.zip", &zip).unwrap());
    assert_eq!(files.get("manifest.json").unwrap(), data);
}

/// The page builds its first view while plotly.js loads: figures asked for before it is there
/// are drawn when it is, in order, except those whose element left the page meanwhile; after
/// that, at once. A stand-in `Plotly.newPlot` records the ids of the elements drawn into.
#[wasm_bindgen_test]
fn figures_wait_for_plotly_and_are_drawn_once_it_has_loaded() {
    let window = web_sys::window().unwrap();
    let body: web_sys::Element = dom::document().unwrap().body().unwrap().into();
    let figure = Figure {
        data: vec![serde_json::json!({ "type": "bar", "x": ["a"], "y": [1] })],
        layout: serde_json::json!({}),
    };
    let first = dom::add_with_id(&body, "div", "waits-first", "").unwrap();
    let gone = dom::add_with_id(&body, "div", "waits-gone", "").unwrap();
    let second = dom::add_with_id(&body, "div", "waits-second", "").unwrap();
    for div in [&first, &gone, &second] {
        dom::plot(div, &figure).unwrap();
    }
    gone.remove();

    let drawn = js_sys::Array::new();
    let record = js_sys::Function::new_with_args("div", "this.drawn.push(div.id)");
    let plotly = js_sys::Object::new();
    js_sys::Reflect::set(&plotly, &"drawn".into(), &drawn).unwrap();
    js_sys::Reflect::set(&plotly, &"newPlot".into(), &record).unwrap();
    js_sys::Reflect::set(&window, &"Plotly".into(), &plotly).unwrap();
    let ids = || -> Vec<String> { drawn.iter().filter_map(|id| id.as_string()).collect() };
    assert!(
        ids().is_empty(),
        "drawn before plotly.js loaded: {:?}",
        ids()
    );

    dom::plotly_settled(true).unwrap();
    assert_eq!(ids(), ["waits-first", "waits-second"]);
    let later = dom::add_with_id(&body, "div", "drawn-at-once", "").unwrap();
    dom::plot(&later, &figure).unwrap();
    assert_eq!(ids(), ["waits-first", "waits-second", "drawn-at-once"]);
    for div in [first, second, later] {
        div.remove();
    }
}

/// Raw deflate of `data` as one stored block (valid deflate, hand-checkable).
fn stored_deflate(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x01];
    out.extend((data.len() as u16).to_le_bytes());
    out.extend((!(data.len() as u16)).to_le_bytes());
    out.extend(data);
    out
}

/// A one-entry zip with a deflated entry.
fn zip_with(name: &[u8], body: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(0x0403_4b50u32.to_le_bytes());
    out.extend([20, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    out.extend((body.len() as u32).to_le_bytes());
    out.extend((size as u32).to_le_bytes());
    out.extend((name.len() as u16).to_le_bytes());
    out.extend([0, 0]);
    out.extend(name);
    out.extend(body);
    let directory_at = out.len() as u32;
    let mut directory = Vec::new();
    directory.extend(0x0201_4b50u32.to_le_bytes());
    directory.extend([20, 0, 20, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    directory.extend((body.len() as u32).to_le_bytes());
    directory.extend((size as u32).to_le_bytes());
    directory.extend((name.len() as u16).to_le_bytes());
    directory.extend([0; 12]);
    directory.extend(0u32.to_le_bytes());
    directory.extend(name);
    let directory_len = directory.len() as u32;
    out.extend(directory);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0, 0, 0, 0, 1, 0, 1, 0]);
    out.extend(directory_len.to_le_bytes());
    out.extend(directory_at.to_le_bytes());
    out.extend([0, 0]);
    out
}
