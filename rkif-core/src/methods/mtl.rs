//! MTL: joint training on the union of all tasks' training sets in one phase, with the
//! summed step budget, then one evaluation of every task (the last row of the accuracy
//! matrix). Not continual learning: the upper bound the others are measured against. BWT is
//! undefined for it (the earlier rows do not exist).

use crate::data::{Example, TaskData};

/// The joint pool: every task's training examples, in task order (shuffled per epoch).
pub fn pool(tasks: &[TaskData]) -> Vec<Example> {
    tasks.iter().flat_map(|t| t.train.iter().cloned()).collect()
}
