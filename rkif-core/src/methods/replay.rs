//! Replay: the same replay memory Recurrent-KIF uses (2% of each earlier task's training
//! set, class-balanced) mixed into the current task's training pool, trained like
//! [`super::seq_lora`] with the same step budget (computed from the task's own size). No
//! importance, no fusion: the baseline that isolates what fusion adds over the memory.

use crate::data::Example;

/// The pool replay trains on: the task's examples followed by the memory (the session
/// shuffles the pool every epoch).
pub fn pool(task_train: Vec<Example>, memory: &[Example]) -> Vec<Example> {
    task_train
        .into_iter()
        .chain(memory.iter().cloned())
        .collect()
}
