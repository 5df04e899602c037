//! Benchmark folders, examples, replay memory and validation sets.
