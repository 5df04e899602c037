//! Importance trackers, quantile masks and fusion against the reference implementation.
//!
//! The fixture folder comes from `RKIF_HF_FIXTURES` (default `../shared/fixtures/hf-reference`
//! relative to the workspace root); shapes and names come from its `recurrent_kif/fixtures.json`.

#[path = "hf_reference/common.rs"]
mod common;
