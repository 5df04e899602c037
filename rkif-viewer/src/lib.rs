//! rkif-viewer: the browser page that renders rkif run reports.
//!
//! Built for `wasm32-unknown-unknown`; it uses only the candle-free part of `rkif-core` (the
//! `report` and `eval` types and `report::figures`). `scripts/build-viewer.sh` builds it into
//! `dist/` (committed), which `rkif_core::report::site::write_site` embeds.
//!
//! - [`run`]: a run's parsed artifacts and the problems found, file by file.
//! - [`zip`]: reading a dropped zip of a run folder.
//! - `load` (wasm only): fetching the report folder's runs, `?run=<url>`, dropped files.
//! - [`dom`] (wasm only): DOM helpers that only ever set text; `app` (wasm only): the page;
//!   `defer` (wasm only): drawing what is below the first view later.

pub mod run;
pub mod zip;

#[cfg(target_family = "wasm")]
mod app;
#[cfg(target_family = "wasm")]
mod defer;
#[cfg(target_family = "wasm")]
pub mod dom;
#[cfg(target_family = "wasm")]
pub mod load;

/// Entry point, called by the page's `main.js` once the module is instantiated; `plotly`
/// settles when plotly.js has loaded (or failed to), which only the figures wait for.
#[cfg(target_family = "wasm")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub async fn start(plotly: js_sys::Promise) -> Result<(), wasm_bindgen::JsValue> {
    app::start(plotly).await
}
