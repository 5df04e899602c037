//! The three benchmarks of the folder ([`Suite`]) and their task orders ([`Order`]),
//! read from `configs/task_orders.json` under user-facing names.

use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::records::type_name;
use crate::{Error, Result};

/// Task-order file, relative to the benchmark folder.
pub(crate) const ORDERS_CONFIG: &str = "configs/task_orders.json";

/// The tasks of the Standard CL benchmark (METHOD.md section 8).
pub(crate) const STANDARD_TASKS: [&str; 4] = ["agnews", "amazon", "dbpedia", "yahoo"];

/// One of the benchmarks a benchmark folder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Suite {
    /// Standard CL benchmark: agnews, amazon, dbpedia, yahoo (`kif/` format).
    Standard,
    /// Long Sequence benchmark: the 15 `kif/` tasks.
    Long,
    /// SuperNI benchmark: 15 Super-NaturalInstructions tasks (`superni_raw/` format).
    #[serde(rename = "superni")]
    SuperNi,
    /// rkif-mini, the project's own small benchmark (`data/rkif-mini`, `kif/` format).
    Mini,
}

impl Suite {
    /// All suites, in the order they are listed.
    pub const ALL: [Suite; 4] = [Suite::Standard, Suite::Long, Suite::SuperNi, Suite::Mini];

    /// The short name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Suite::Standard => "standard",
            Suite::Long => "long",
            Suite::SuperNi => "superni",
            Suite::Mini => "mini",
        }
    }

    /// A title for listings.
    pub fn title(self) -> &'static str {
        match self {
            Suite::Standard => "Standard CL benchmark",
            Suite::Long => "Long Sequence benchmark",
            Suite::SuperNi => "SuperNI benchmark",
            Suite::Mini => "rkif-mini benchmark",
        }
    }
}

impl std::fmt::Display for Suite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Suite {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        Suite::ALL
            .into_iter()
            .find(|suite| suite.name() == name)
            .ok_or_else(|| {
                Error::Data(format!(
                    "unknown benchmark `{name}`; known: standard, long, superni, mini"
                ))
            })
    }
}

/// A task order: the sequence in which a continual-learning run meets the tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// User-facing name, e.g. `standard-1`.
    pub name: String,
    /// The benchmark the order belongs to.
    pub suite: Suite,
    /// Where the order comes from in the literature, e.g. `Recurrent-KIF order 4`.
    pub origin: String,
    /// Task ids, first trained first.
    pub tasks: Vec<String>,
}

impl std::fmt::Display for Order {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.name,
            self.origin,
            self.tasks.join(" -> ")
        )
    }
}

/// Where a named order lives in `task_orders.json`.
struct NamedOrder {
    name: &'static str,
    suite: Suite,
    group: &'static str,
    key: &'static str,
    origin: &'static str,
}

/// The orders rkif exposes. Recurrent-KIF numbers its 15-task orders 1-3 and its 4-task
/// orders 4-6 (the latter equal O-LoRA's orders 1-3, the data README says so); the names
/// here say which benchmark an order belongs to.
const NAMED_ORDERS: [NamedOrder; 11] = [
    NamedOrder {
        name: "standard-1",
        suite: Suite::Standard,
        group: "recurrent_kif",
        key: "order4",
        origin: "Recurrent-KIF order 4 = O-LoRA order 1",
    },
    NamedOrder {
        name: "standard-2",
        suite: Suite::Standard,
        group: "recurrent_kif",
        key: "order5",
        origin: "Recurrent-KIF order 5 = O-LoRA order 2",
    },
    NamedOrder {
        name: "standard-3",
        suite: Suite::Standard,
        group: "recurrent_kif",
        key: "order6",
        origin: "Recurrent-KIF order 6 = O-LoRA order 3",
    },
    NamedOrder {
        name: "long-1",
        suite: Suite::Long,
        group: "recurrent_kif",
        key: "order1",
        origin: "Recurrent-KIF order 1",
    },
    NamedOrder {
        name: "long-2",
        suite: Suite::Long,
        group: "recurrent_kif",
        key: "order2",
        origin: "Recurrent-KIF order 2",
    },
    NamedOrder {
        name: "long-3",
        suite: Suite::Long,
        group: "recurrent_kif",
        key: "order3",
        origin: "Recurrent-KIF order 3 = O-LoRA long",
    },
    NamedOrder {
        name: "superni-1",
        suite: Suite::SuperNi,
        group: "tasl_superni",
        key: "order1",
        origin: "TaSL SuperNI order 1",
    },
    NamedOrder {
        name: "superni-2",
        suite: Suite::SuperNi,
        group: "tasl_superni",
        key: "order2",
        origin: "TaSL SuperNI order 2",
    },
    NamedOrder {
        name: "mini-1",
        suite: Suite::Mini,
        group: "rkif_mini",
        key: "order1",
        origin: "rkif-mini order 1",
    },
    NamedOrder {
        name: "mini-2",
        suite: Suite::Mini,
        group: "rkif_mini",
        key: "order2",
        origin: "rkif-mini order 2",
    },
    NamedOrder {
        name: "mini-3",
        suite: Suite::Mini,
        group: "rkif_mini",
        key: "order3",
        origin: "rkif-mini order 3",
    },
];

/// Reads the named orders from the parsed `task_orders.json` at `path`.
///
/// An order whose group or key is absent from the file is skipped (a smaller benchmark
/// folder may ship fewer orders). An order that is present must be a non-empty list of
/// distinct task ids that `suite_tasks` lists for its suite.
pub(crate) fn named_orders(
    path: &Path,
    json: &Value,
    suite_tasks: impl Fn(Suite) -> Vec<String>,
) -> Result<Vec<Order>> {
    if !json.is_object() {
        return Err(Error::format(
            path,
            format!(
                "expected an object of order groups, found {}",
                type_name(json)
            ),
        ));
    }
    let mut orders = Vec::new();
    for named in &NAMED_ORDERS {
        let Some(list) = json.get(named.group).and_then(|group| group.get(named.key)) else {
            continue;
        };
        let error = |what: String| {
            Error::format(
                path,
                format!(
                    "`{}.{}` (order {}): {what}",
                    named.group, named.key, named.name
                ),
            )
        };
        let items = list.as_array().ok_or_else(|| {
            error(format!(
                "is {}, expected a list of task ids",
                type_name(list)
            ))
        })?;
        if items.is_empty() {
            return Err(error("is empty".into()));
        }
        let known = suite_tasks(named.suite);
        let mut tasks: Vec<String> = Vec::with_capacity(items.len());
        for item in items {
            let task = item
                .as_str()
                .ok_or_else(|| error(format!("holds {}, expected task ids", type_name(item))))?;
            if !known.iter().any(|k| k == task) {
                return Err(error(format!(
                    "task `{task}` is not a task of the {} in this folder (known: {})",
                    named.suite.title(),
                    known.join(", ")
                )));
            }
            if tasks.iter().any(|t| t == task) {
                return Err(error(format!("task `{task}` is listed twice")));
            }
            tasks.push(task.to_string());
        }
        orders.push(Order {
            name: named.name.to_string(),
            suite: named.suite,
            origin: named.origin.to_string(),
            tasks,
        });
    }
    Ok(orders)
}
