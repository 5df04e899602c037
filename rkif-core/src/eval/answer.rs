//! Exact-match scoring of generated answers.
//!
//! Tasks are classification cast as generation: a prediction is correct when its normalised
//! text equals the normalised label. Normalisation is lower-casing and trimming surrounding
//! white space, nothing more: no punctuation stripping, no article removal, so that a model
//! that answers `"positive."` for `"positive"` is counted wrong, as in the reference.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The normalised form of an answer: surrounding white space trimmed, then lower-cased
/// (Unicode lower case, like Python's `str.lower`).
pub fn normalize_answer(text: &str) -> String {
    text.trim().to_lowercase()
}

/// Whether `prediction` answers `label` exactly, after [`normalize_answer`] on both.
///
/// The label is normalised too (the reference only lower-cases it), so a label file with a
/// stray trailing space does not make every prediction wrong.
pub fn exact_match(prediction: &str, label: &str) -> bool {
    normalize_answer(prediction) == normalize_answer(label)
}

/// The exact-match score of one task's evaluation: `correct` of `total` examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskAccuracy {
    /// Examples whose prediction matched the label.
    pub correct: usize,
    /// Examples evaluated.
    pub total: usize,
}

impl TaskAccuracy {
    /// `correct / total`, or `None` when no example was evaluated.
    pub fn accuracy(&self) -> Option<f64> {
        if self.total == 0 {
            None
        } else {
            Some(self.correct as f64 / self.total as f64)
        }
    }
}

/// Scores `predictions` against `labels`, pairwise in order. `task` names the task in the
/// error when the two lists differ in length.
pub fn score_predictions<P, L>(task: &str, predictions: &[P], labels: &[L]) -> Result<TaskAccuracy>
where
    P: AsRef<str>,
    L: AsRef<str>,
{
    if predictions.len() != labels.len() {
        return Err(Error::Data(format!(
            "task `{task}`: {} predictions for {} labels",
            predictions.len(),
            labels.len()
        )));
    }
    let correct = predictions
        .iter()
        .zip(labels)
        .filter(|(p, l)| exact_match(p.as_ref(), l.as_ref()))
        .count();
    Ok(TaskAccuracy {
        correct,
        total: labels.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_lowercases_and_trims_only() {
        assert_eq!(normalize_answer("  World\n"), "world");
        assert_eq!(normalize_answer("Sci/Tech"), "sci/tech");
        assert_eq!(normalize_answer("positive."), "positive.");
        assert_eq!(normalize_answer("ÉCOLE"), "école");
    }

    #[test]
    fn exact_match_ignores_case_and_outer_space_but_not_inner_text() {
        assert!(exact_match(" Business ", "business"));
        assert!(exact_match("sports", "Sports "));
        assert!(!exact_match("sport", "sports"));
        assert!(!exact_match("world news", "world"));
        assert!(!exact_match("", "world"));
    }

    #[test]
    fn scores_count_matches() {
        let score = score_predictions(
            "agnews",
            &["World", "sports ", "business", "tech"],
            &["world", "sports", "sci/tech", "sci/tech"],
        )
        .unwrap();
        assert_eq!(
            score,
            TaskAccuracy {
                correct: 2,
                total: 4
            }
        );
        assert_eq!(score.accuracy(), Some(0.5));
    }

    #[test]
    fn empty_evaluation_has_no_accuracy() {
        let score = score_predictions::<&str, &str>("cb", &[], &[]).unwrap();
        assert_eq!(score.accuracy(), None);
    }

    #[test]
    fn length_mismatch_names_the_task() {
        let err = score_predictions("yahoo", &["a"], &["a", "b"]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("yahoo") && text.contains("1 predictions for 2 labels"),
            "{text}"
        );
    }
}
