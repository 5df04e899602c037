//! The replay memory (METHOD.md section 5) and the validation set (section 2), both
//! seeded so that a run can be repeated exactly.
//!
//! Each task gets its own generator, derived from the run seed, the purpose (memory or
//! validation) and the task's position in the order. So the examples kept from task 0
//! are the same whether the memory is built for task 1 or for task 9.

use rand::seq::IndexedRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

use super::task::{Example, TaskData, TaskExample};
use crate::{Error, Result};

/// Share of each old task's training set kept in the replay memory (2%).
pub const DEFAULT_REPLAY_FRACTION: f64 = 0.02;

/// Dev examples per seen task in the validation set.
pub const DEFAULT_VALIDATION_PER_TASK: usize = 25;

/// How many examples the memory takes from a training set of `train_len` records:
/// `floor(fraction * train_len)` (20 of 1000 at 2%).
///
/// The product gets a relative slack of 1e-9 before the floor, so that binary rounding
/// (`0.29 * 100 = 28.999…`) does not lose a record. A task with fewer than 50 records
/// at 2% gets 0: METHOD.md says floor, and rkif keeps it.
pub fn replay_size(train_len: usize, fraction: f64) -> usize {
    let exact = fraction * train_len as f64;
    (exact * (1.0 + 1e-9)).floor() as usize
}

/// Builds the replay memory for the task that follows `previous` (tasks 0..k-1 of the
/// order, in order), from their training sets.
///
/// From each task, `n = replay_size(train.len(), fraction)` examples, class-balanced:
/// `max(1, n / #labels)` per label (integer division; all of a label's records when it
/// has fewer), then topped up to `n` with a uniform draw from the task's other records.
/// When `0 < n < #labels` the per-label minimum of one wins, so the task contributes one
/// example per label, more than `n`; with `n = 0` it contributes nothing. Tasks without
/// a label list (SuperNI) get a uniform draw of `n`. Within a task the examples keep
/// their file order.
pub fn replay_memory(previous: &[TaskData], fraction: f64, seed: u64) -> Result<Vec<TaskExample>> {
    if !(0.0..=1.0).contains(&fraction) {
        return Err(Error::Data(format!(
            "replay fraction must be between 0 and 1, got {fraction}"
        )));
    }
    let mut memory = Vec::new();
    for (position, task) in previous.iter().enumerate() {
        let mut rng = task_rng(seed, "replay", position);
        let n = replay_size(task.train.len(), fraction);
        let picked = replay_indices(task, n, &mut rng);
        memory.extend(tagged(task, &task.train, &picked));
    }
    Ok(memory)
}

/// The validation set while training the last task of `seen` (tasks 0..=k): up to
/// `per_task` dev examples of every seen task, a seeded uniform choice, in file order.
pub fn validation_set(seen: &[TaskData], per_task: usize, seed: u64) -> Vec<TaskExample> {
    let mut set = Vec::new();
    for (position, task) in seen.iter().enumerate() {
        let mut rng = task_rng(seed, "validation", position);
        let picked = draw(&mut rng, 0..task.dev.len(), per_task);
        set.extend(tagged(task, &task.dev, &picked));
    }
    set
}

/// The generator of one task for one purpose: ChaCha8 seeded with
/// sha256("rkif-data" | purpose | seed | position).
fn task_rng(seed: u64, purpose: &str, position: usize) -> ChaCha8Rng {
    let mut hasher = Sha256::new();
    hasher.update(b"rkif-data\0");
    hasher.update(purpose.as_bytes());
    hasher.update([0]);
    hasher.update(seed.to_le_bytes());
    hasher.update((position as u64).to_le_bytes());
    ChaCha8Rng::from_seed(hasher.finalize().into())
}

/// Indices into `task.train` of the memory examples, ascending.
fn replay_indices(task: &TaskData, n: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    let mut chosen = vec![false; task.train.len()];
    let labels = task.info.labels.as_deref().unwrap_or_default();
    if !labels.is_empty() {
        let quota = (n / labels.len()).max(1);
        for label in labels {
            let members = task
                .train
                .iter()
                .enumerate()
                .filter(|(_, example)| &example.output == label)
                .map(|(index, _)| index);
            mark(&mut chosen, &draw(rng, members, quota));
        }
    }
    let taken = chosen.iter().filter(|&&c| c).count();
    let rest: Vec<usize> = chosen
        .iter()
        .enumerate()
        .filter(|(_, &c)| !c)
        .map(|(index, _)| index)
        .collect();
    mark(
        &mut chosen,
        &draw(rng, rest.into_iter(), n.saturating_sub(taken)),
    );
    chosen
        .iter()
        .enumerate()
        .filter(|(_, &c)| c)
        .map(|(index, _)| index)
        .collect()
}

/// `amount` distinct items of `pool` (all of them when it is smaller), ascending.
fn draw(rng: &mut ChaCha8Rng, pool: impl Iterator<Item = usize>, amount: usize) -> Vec<usize> {
    let pool: Vec<usize> = pool.collect();
    // `choose_multiple` returns the draw in random order; file order reads better.
    let mut picked: Vec<usize> = pool.choose_multiple(rng, amount).copied().collect();
    picked.sort_unstable();
    picked
}

fn mark(chosen: &mut [bool], indices: &[usize]) {
    for &index in indices {
        if let Some(slot) = chosen.get_mut(index) {
            *slot = true;
        }
    }
}

fn tagged<'a>(
    task: &'a TaskData,
    examples: &'a [Example],
    indices: &'a [usize],
) -> impl Iterator<Item = TaskExample> + 'a {
    indices
        .iter()
        .filter_map(move |&index| examples.get(index))
        .map(move |example| TaskExample {
            task: task.info.name.clone(),
            example: example.clone(),
        })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::data::TaskInfo;

    /// A task whose train set has `counts[i]` records of label `L{i}` (interleaved so
    /// that file order does not group labels) and whose dev set has `dev_len` records.
    fn task(name: &str, counts: &[usize], dev_len: usize) -> TaskData {
        let labels: Vec<String> = (0..counts.len()).map(|i| format!("L{i}")).collect();
        let mut remaining = counts.to_vec();
        let mut train = Vec::new();
        while remaining.iter().any(|&c| c > 0) {
            for (label, left) in labels.iter().zip(remaining.iter_mut()) {
                if *left > 0 {
                    *left -= 1;
                    train.push(example(name, train.len(), label));
                }
            }
        }
        let dev = (0..dev_len).map(|i| example(name, i, "L0")).collect();
        TaskData {
            info: TaskInfo {
                name: name.to_string(),
                kind: "TC".to_string(),
                instruction: String::new(),
                labels: Some(labels),
            },
            train,
            dev,
            test: Vec::new(),
            excluded: Vec::new(),
            caveats: Vec::new(),
            files: Vec::new(),
        }
    }

    fn unlabelled(name: &str, len: usize) -> TaskData {
        let mut task = task(name, &[len], 0);
        task.info.labels = None;
        task
    }

    fn example(task: &str, index: usize, output: &str) -> Example {
        Example {
            id: format!("{task}_{index}"),
            instruction: String::new(),
            input: format!("input {index}"),
            output: output.to_string(),
        }
    }

    fn per_label(memory: &[TaskExample]) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for item in memory {
            *counts.entry(item.example.output.clone()).or_insert(0) += 1;
        }
        counts
    }

    fn ids(items: &[TaskExample]) -> Vec<String> {
        items.iter().map(|item| item.example.id.clone()).collect()
    }

    #[test]
    fn replay_size_is_the_floor_of_the_share() {
        assert_eq!(replay_size(1000, 0.02), 20);
        assert_eq!(replay_size(250, 0.02), 5);
        assert_eq!(replay_size(400, 0.02), 8);
        assert_eq!(replay_size(49, 0.02), 0);
        assert_eq!(replay_size(50, 0.02), 1);
        assert_eq!(replay_size(99, 0.02), 1);
        // 0.29 * 100 is 28.999999999999996 in binary floating point.
        assert_eq!(replay_size(100, 0.29), 29);
        assert_eq!(replay_size(0, 0.02), 0);
    }

    #[test]
    fn twenty_of_a_thousand_with_four_labels_is_five_per_label() -> Result<()> {
        let memory = replay_memory(&[task("t", &[250; 4], 0)], 0.02, 7)?;
        assert_eq!(memory.len(), 20);
        let expected: BTreeMap<String, usize> = (0..4).map(|i| (format!("L{i}"), 5)).collect();
        assert_eq!(per_label(&memory), expected);
        assert!(memory.iter().all(|item| item.task == "t"));
        Ok(())
    }

    #[test]
    fn small_labels_are_taken_whole_and_the_rest_is_topped_up() -> Result<()> {
        // n = 20, quota 5: L0 5, L1 5, L2 all 3, L3 all 2, then 5 more from the rest.
        let memory = replay_memory(&[task("t", &[990, 5, 3, 2], 0)], 0.02, 3)?;
        assert_eq!(memory.len(), 20);
        let counts = per_label(&memory);
        assert_eq!(counts.get("L1"), Some(&5));
        assert_eq!(counts.get("L2"), Some(&3));
        assert_eq!(counts.get("L3"), Some(&2));
        assert_eq!(counts.get("L0"), Some(&10));
        let unique: BTreeSet<String> = ids(&memory).into_iter().collect();
        assert_eq!(unique.len(), 20, "no example twice");
        Ok(())
    }

    #[test]
    fn uneven_quota_is_topped_up_to_n() -> Result<()> {
        // n = 20 with 3 labels: 6 per label (18), then 2 more.
        let memory = replay_memory(&[task("t", &[334, 333, 333], 0)], 0.02, 11)?;
        assert_eq!(memory.len(), 20);
        assert!(per_label(&memory).values().all(|&c| (6..=8).contains(&c)));
        Ok(())
    }

    #[test]
    fn one_per_label_when_n_is_below_the_label_count() -> Result<()> {
        // 100 records at 2% -> n = 2 < 3 labels: the per-label minimum of one wins.
        let memory = replay_memory(&[task("t", &[34, 33, 33], 0)], 0.02, 1)?;
        assert_eq!(memory.len(), 3);
        assert!(per_label(&memory).values().all(|&c| c == 1));
        Ok(())
    }

    #[test]
    fn a_task_under_fifty_records_contributes_nothing() -> Result<()> {
        let tasks = [task("small", &[20, 20], 0), task("big", &[500, 500], 0)];
        let memory = replay_memory(&tasks, 0.02, 5)?;
        assert_eq!(memory.len(), 20);
        assert!(memory.iter().all(|item| item.task == "big"));
        Ok(())
    }

    #[test]
    fn unlabelled_tasks_get_a_uniform_draw_of_n() -> Result<()> {
        let memory = replay_memory(&[unlabelled("gen", 338)], 0.02, 9)?;
        assert_eq!(memory.len(), 6);
        let unique: BTreeSet<String> = ids(&memory).into_iter().collect();
        assert_eq!(unique.len(), 6);
        Ok(())
    }

    #[test]
    fn the_selection_depends_only_on_the_seed() -> Result<()> {
        let tasks = [task("a", &[250; 4], 0), task("b", &[500, 500], 0)];
        let first = replay_memory(&tasks, 0.02, 42)?;
        let again = replay_memory(&tasks, 0.02, 42)?;
        let other = replay_memory(&tasks, 0.02, 43)?;
        assert_eq!(ids(&first), ids(&again));
        assert_ne!(ids(&first), ids(&other));
        Ok(())
    }

    #[test]
    fn an_old_task_keeps_its_examples_as_the_order_grows() -> Result<()> {
        let tasks = [
            task("a", &[250; 4], 0),
            task("b", &[500, 500], 0),
            task("c", &[1000], 0),
        ];
        let at_task_2 = replay_memory(&tasks[..2], 0.02, 8)?;
        let at_task_3 = replay_memory(&tasks, 0.02, 8)?;
        assert_eq!(at_task_3.len(), 60);
        assert_eq!(ids(&at_task_2), ids(&at_task_3[..40]));
        Ok(())
    }

    #[test]
    fn a_fraction_outside_zero_to_one_is_refused() {
        let tasks = [task("a", &[10], 0)];
        for bad in [-0.1, 1.5, f64::NAN] {
            let result = replay_memory(&tasks, bad, 0);
            assert!(matches!(result, Err(Error::Data(_))), "{bad}: {result:?}");
        }
    }

    #[test]
    fn validation_takes_up_to_25_dev_examples_per_task() {
        let tasks = [task("a", &[10], 500), task("b", &[10], 12)];
        let set = validation_set(&tasks, DEFAULT_VALIDATION_PER_TASK, 1);
        assert_eq!(set.iter().filter(|item| item.task == "a").count(), 25);
        assert_eq!(set.iter().filter(|item| item.task == "b").count(), 12);
        let again = validation_set(&tasks, DEFAULT_VALIDATION_PER_TASK, 1);
        let other = validation_set(&tasks, DEFAULT_VALIDATION_PER_TASK, 2);
        assert_eq!(ids(&set), ids(&again));
        assert_ne!(ids(&set), ids(&other));
    }
}
