//! rkif-viewer: the browser page that renders rkif run reports.
//!
//! Built for `wasm32-unknown-unknown`; it uses only the candle-free part of
//! `rkif-core` (the `report` and `eval` types).
