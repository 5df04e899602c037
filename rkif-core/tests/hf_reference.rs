//! The backbones, LoRA and AdamW against Hugging Face / PEFT reference outputs.
//!
//! The fixture folder comes from `RKIF_HF_FIXTURES` (default `../shared/fixtures/hf-reference`
//! relative to the workspace root). Every size, name and input is read from the fixture files,
//! so the same tests check any fixture set with the same layout.

#[path = "hf_reference/adapter.rs"]
mod adapter;
#[path = "hf_reference/common.rs"]
mod common;
#[path = "hf_reference/llama.rs"]
mod llama;
#[path = "hf_reference/lora_fixture.rs"]
mod lora_fixture;
#[path = "hf_reference/optim.rs"]
mod optim;
#[path = "hf_reference/t5.rs"]
mod t5;
