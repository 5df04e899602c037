//! The project's own small continual-learning benchmark ("rkif-mini"), generated from a seed.
//!
//! Four tasks over one shared vocabulary, in the layout of the real benchmark
//! (`kif/{train,dev,test}/<task>.json`, `configs/kif_tasks.json`, `configs/task_orders.json`):
//!
//! | task | kind | question | labels |
//! |---|---|---|---|
//! | `topic` | topic classification | what the sentence is about | sport, food, music, travel |
//! | `sentiment` | sentiment | whether the sentence is positive (negation flips it) | good, bad |
//! | `pair` | sentence-pair relation | whether two sentences share a topic | yes, no |
//! | `person` | entity | who the sentence is about | anna, ben, carla, dev |
//!
//! Every task reads the same kind of sentence (a person, topic nouns, an adjective), so the
//! tasks differ only in the question asked and the label words answered: a small model that
//! learns them one after another without memory overwrites the mapping of earlier questions,
//! which is the forgetting continual learning is about. Labels are balanced within each split.
//!
//! [`pretraining_corpus`] draws plain sentences of the same language (no questions, no
//! labels) for pretraining the embedded base model, from a separate seed.

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// The seed the committed `data/rkif-mini` folder was generated with.
pub const DEFAULT_SEED: u64 = 20_250_217;

/// Split sizes per task: train, dev, test.
pub const SPLIT_SIZES: [(&str, usize); 3] = [("train", 600), ("dev", 100), ("test", 200)];

const TOPICS: [(&str, [&str; 8]); 4] = [
    (
        "sport",
        [
            "ball", "goal", "team", "match", "coach", "race", "player", "stadium",
        ],
    ),
    (
        "food",
        [
            "bread", "soup", "cake", "apple", "cheese", "dinner", "kitchen", "recipe",
        ],
    ),
    (
        "music",
        [
            "song", "guitar", "drum", "concert", "band", "piano", "melody", "singer",
        ],
    ),
    (
        "travel",
        [
            "train", "hotel", "beach", "flight", "map", "island", "ticket", "airport",
        ],
    ),
];
const PEOPLE: [&str; 4] = ["anna", "ben", "carla", "dev"];
const POSITIVE: [&str; 6] = [
    "great",
    "lovely",
    "wonderful",
    "pleasant",
    "superb",
    "delightful",
];
const NEGATIVE: [&str; 6] = ["awful", "boring", "terrible", "dull", "poor", "horrible"];
const VERBS: [&str; 5] = ["saw", "found", "described", "remembered", "talked about"];
const TIMES: [&str; 4] = ["yesterday", "today", "last week", "this morning"];

/// One record, in the real benchmark's field order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    pub id: String,
    pub instruction: String,
    pub input: String,
    pub output: String,
}

/// A task's metadata, as in `configs/kif_tasks.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskSpec {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub instruction: String,
    pub labels: Vec<String>,
}

/// The task names, in the benchmark's first order.
pub const TASKS: [&str; 4] = ["topic", "sentiment", "pair", "person"];

/// The task orders (`configs/task_orders.json`, group `rkif_mini`).
pub const ORDERS: [(&str, [&str; 4]); 3] = [
    ("order1", ["topic", "sentiment", "pair", "person"]),
    ("order2", ["person", "pair", "sentiment", "topic"]),
    ("order3", ["sentiment", "person", "topic", "pair"]),
];

fn options(question: &str, labels: &[&str]) -> String {
    format!(
        "{question} Choose one from the option. Option: {}.\n",
        labels.join(", ")
    )
}

/// Metadata of `task` (one of [`TASKS`]).
pub fn task_spec(task: &str) -> Option<TaskSpec> {
    let (kind, question, labels): (&str, &str, Vec<&str>) = match task {
        "topic" => (
            "TC",
            "What is the topic of the following sentence?",
            TOPICS.iter().map(|t| t.0).collect(),
        ),
        "sentiment" => (
            "SC",
            "What is the sentiment of the following sentence?",
            vec!["good", "bad"],
        ),
        "pair" => (
            "NLI",
            "Do the two sentences talk about the same topic?",
            vec!["yes", "no"],
        ),
        "person" => (
            "NER",
            "Who is the following sentence about?",
            PEOPLE.to_vec(),
        ),
        _ => return None,
    };
    Some(TaskSpec {
        kind,
        instruction: options(question, &labels),
        labels: labels.into_iter().map(String::from).collect(),
    })
}

/// What a sentence is made of; the labels of every task derive from it.
struct Sentence {
    text: String,
    topic: usize,
    person: usize,
    positive: bool,
}

/// A sentence with the given topic, person and polarity. Polarity is carried by an adjective,
/// negated ("not") in about a fifth of the sentences; about a quarter of the sentences also
/// mention one noun of another topic, so the topic is the majority, not any noun.
fn sentence(rng: &mut ChaCha8Rng, topic: usize, person: usize, positive: bool) -> Sentence {
    let nouns = &TOPICS[topic].1;
    let pick = |rng: &mut ChaCha8Rng, xs: &[&'static str]| -> &'static str {
        xs.choose(rng).copied().unwrap_or("")
    };
    let n1 = pick(rng, nouns);
    let n2 = pick(rng, nouns);
    let third = if rng.random_bool(0.25) {
        let other = (topic + rng.random_range(1..TOPICS.len())) % TOPICS.len();
        pick(rng, &TOPICS[other].1)
    } else {
        pick(rng, nouns)
    };
    let negated = rng.random_bool(0.2);
    // A negated adjective of the opposite polarity keeps the sentence's polarity.
    let adjective_positive = positive != negated;
    let adj = pick(
        rng,
        if adjective_positive {
            &POSITIVE
        } else {
            &NEGATIVE
        },
    );
    let not = if negated { "not " } else { "" };
    let name = PEOPLE[person];
    let verb = pick(rng, &VERBS);
    let time = pick(rng, &TIMES);
    let text = match rng.random_range(0..4) {
        0 => format!("{name} {verb} the {n1} and the {n2} near the {third} . it was {not}{adj} ."),
        1 => format!("the {n1} was {not}{adj} , {name} said after the {n2} and the {third} ."),
        2 => {
            format!("{time} {name} {verb} a {n1} with the {n2} , and the {third} was {not}{adj} .")
        }
        _ => format!("{name} thinks the {n1} , the {n2} and the {third} are {not}{adj} ."),
    };
    Sentence {
        text,
        topic,
        person,
        positive,
    }
}

fn random_sentence(rng: &mut ChaCha8Rng) -> Sentence {
    let topic = rng.random_range(0..TOPICS.len());
    let person = rng.random_range(0..PEOPLE.len());
    let positive = rng.random_bool(0.5);
    sentence(rng, topic, person, positive)
}

/// `n` records of `task`, labels cycling through the label list (balanced), then shuffled.
fn records(task: &str, n: usize, split: &str, rng: &mut ChaCha8Rng) -> Option<Vec<Record>> {
    let spec = task_spec(task)?;
    let n_labels = spec.labels.len();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let label = i % n_labels;
        let (input, output) = match task {
            "topic" => {
                let person = rng.random_range(0..PEOPLE.len());
                let positive = rng.random_bool(0.5);
                let s = sentence(rng, label, person, positive);
                (format!("Sentence: {}\nAnswer:", s.text), TOPICS[s.topic].0)
            }
            "sentiment" => {
                let topic = rng.random_range(0..TOPICS.len());
                let person = rng.random_range(0..PEOPLE.len());
                let s = sentence(rng, topic, person, label == 0);
                let out = if s.positive { "good" } else { "bad" };
                (format!("Sentence: {}\nAnswer:", s.text), out)
            }
            "pair" => {
                let a = random_sentence(rng);
                let same = label == 0;
                let topic_b = if same {
                    a.topic
                } else {
                    (a.topic + rng.random_range(1..TOPICS.len())) % TOPICS.len()
                };
                let person = rng.random_range(0..PEOPLE.len());
                let positive = rng.random_bool(0.5);
                let b = sentence(rng, topic_b, person, positive);
                let out = if a.topic == b.topic { "yes" } else { "no" };
                (
                    format!("sentence 1: {}\nsentence 2: {}\nAnswer:", a.text, b.text),
                    out,
                )
            }
            "person" => {
                let topic = rng.random_range(0..TOPICS.len());
                let positive = rng.random_bool(0.5);
                let s = sentence(rng, topic, label, positive);
                (format!("Sentence: {}\nAnswer:", s.text), PEOPLE[s.person])
            }
            _ => return None,
        };
        out.push(Record {
            id: String::new(),
            instruction: spec.instruction.clone(),
            input,
            output: output.to_string(),
        });
    }
    // Fisher-Yates with our generator, then stable ids in file order.
    for i in (1..out.len()).rev() {
        let j = rng.random_range(0..=i);
        out.swap(i, j);
    }
    for (i, r) in out.iter_mut().enumerate() {
        r.id = format!("{task}_{split}_{i}");
    }
    Some(out)
}

/// The whole benchmark as `(relative path, file content)` pairs, deterministic in `seed`.
pub fn generate(seed: u64) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut specs = serde_json::Map::new();
    for (t, task) in TASKS.iter().enumerate() {
        if let Some(spec) = task_spec(task) {
            specs.insert(task.to_string(), json_value(&spec));
        }
        for (s, (split, n)) in SPLIT_SIZES.iter().enumerate() {
            // One generator per (task, split): changing one split's size leaves the others.
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ ((t as u64) << 32) ^ ((s as u64) << 16));
            if let Some(recs) = records(task, *n, split, &mut rng) {
                files.push((format!("kif/{split}/{task}.json"), to_json(&recs)));
            }
        }
    }
    files.push((
        "configs/kif_tasks.json".to_string(),
        to_json(&serde_json::Value::Object(specs)),
    ));
    let orders: serde_json::Map<String, serde_json::Value> = ORDERS
        .iter()
        .map(|(name, tasks)| (name.to_string(), json_value(tasks)))
        .collect();
    let mut groups = serde_json::Map::new();
    groups.insert("rkif_mini".into(), serde_json::Value::Object(orders));
    files.push((
        "configs/task_orders.json".to_string(),
        to_json(&serde_json::Value::Object(groups)),
    ));
    files
}

/// `n` plain sentences of the benchmark's language, one per line, for pretraining the base
/// model. Drawn from their own seed, so no benchmark record is reproduced on purpose.
pub fn pretraining_corpus(seed: u64, n: usize) -> Vec<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xC0FFEE);
    (0..n).map(|_| random_sentence(&mut rng).text).collect()
}

/// Every word the benchmark and the corpus use, sorted (the embedded tokenizer's vocabulary).
pub fn vocabulary() -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    let mut add = |text: &str| {
        for w in text.split(|c: char| c.is_whitespace()) {
            if !w.is_empty() {
                words.push(w.to_string());
            }
        }
    };
    for task in TASKS {
        if let Some(spec) = task_spec(task) {
            add(&spec.instruction);
            spec.labels.iter().for_each(|l| add(l));
        }
    }
    for (_, nouns) in TOPICS {
        nouns.iter().for_each(|n| add(n));
    }
    for w in PEOPLE
        .iter()
        .chain(&POSITIVE)
        .chain(&NEGATIVE)
        .chain(&VERBS)
        .chain(&TIMES)
    {
        add(w);
    }
    add(
        "the and near it was not , said after a with are thinks . Sentence: sentence 1: 2: Answer:",
    );
    words.sort();
    words.dedup();
    words
}

fn json_value<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

fn to_json<T: Serialize>(v: &T) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_seed_dependent() {
        let a = generate(1);
        assert_eq!(a, generate(1));
        assert_ne!(a, generate(2));
    }

    #[test]
    fn splits_are_balanced_and_labels_are_valid() {
        let files = generate(DEFAULT_SEED);
        for task in TASKS {
            let spec = task_spec(task).unwrap();
            for (split, n) in SPLIT_SIZES {
                let path = format!("kif/{split}/{task}.json");
                let text = &files.iter().find(|(p, _)| *p == path).unwrap().1;
                let recs: Vec<serde_json::Value> = serde_json::from_str(text).unwrap();
                assert_eq!(recs.len(), n, "{path}");
                for label in &spec.labels {
                    let count = recs.iter().filter(|r| r["output"] == **label).count();
                    assert_eq!(count, n / spec.labels.len(), "{path} label {label}");
                }
            }
        }
    }

    #[test]
    fn every_word_is_in_the_vocabulary() {
        let vocab = vocabulary();
        let files = generate(3);
        let corpus = pretraining_corpus(3, 200);
        let texts = files
            .iter()
            .filter(|(p, _)| p.starts_with("kif/"))
            .flat_map(|(_, t)| {
                let recs: Vec<Record> = serde_json::from_str::<Vec<serde_json::Value>>(t)
                    .unwrap()
                    .into_iter()
                    .map(|v| Record {
                        id: String::new(),
                        instruction: v["instruction"].as_str().unwrap().into(),
                        input: v["input"].as_str().unwrap().into(),
                        output: v["output"].as_str().unwrap().into(),
                    })
                    .collect();
                recs.into_iter()
                    .map(|r| format!("{} {} {}", r.instruction, r.input, r.output))
            })
            .chain(corpus);
        for text in texts {
            for w in text.split_whitespace() {
                assert!(vocab.binary_search(&w.to_string()).is_ok(), "`{w}` missing");
            }
        }
    }
}
