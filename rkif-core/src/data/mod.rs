//! Benchmark folders, examples, replay memory and validation sets.

pub mod synthetic;
