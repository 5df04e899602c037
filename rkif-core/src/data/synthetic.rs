//! The project's own small continual-learning benchmark ("rkif-mini"), generated from a seed.
//!
//! Four tasks over one shared vocabulary, in the layout of the real benchmark
//! (`kif/{train,dev,test}/<task>.json`, `configs/kif_tasks.json`, `configs/task_orders.json`):
//!
//! | task | kind | question asks for | labels |
//! |---|---|---|---|
//! | `topic` | topic classification | the topic | sport, food, music, travel |
//! | `sentiment` | sentiment | the mood (two adjectives of one polarity) | good, bad |
//! | `place` | location | the place | home, park, school, city |
//! | `time` | temporal attribute | the time of day | morning, noon, evening, night |
//!
//! Every task reads the same kind of sentence (a person, topic nouns, two adjectives of one
//! polarity, two words of a place, two words of a time of day), so the tasks differ only in the
//! question asked and the label words answered: a small model that learns them one after another without memory
//! overwrites the mapping of earlier questions, which is the forgetting continual learning is
//! about. Labels are balanced within each split.
//!
//! Every attribute is carried by at least two words. A tiny model (the embedded base) learns
//! to read an attribute spread over several words early in pretraining, but needs thousands of
//! steps to learn to fetch a single word (measured: a person's name, said once or twice, a
//! negated adjective and a sentence-pair comparison stayed at or near chance after 3000-4000
//! steps, and LoRA fine-tuning could not teach them). So there is no negation, no sentence-pair
//! task and no "who" task here. Each question names the attribute by the word the pretraining
//! text uses for it (`topic`, `mood`, `place`, `time`): with "Where did it happen?" LoRA
//! learnt the place task to 34-54% only (three trials), with the attribute named to 100%.
//!
//! [`pretraining_corpus`] and [`knowledge_corpus`] draw documents of the same language for pretraining the embedded
//! base model, from a separate seed: sentences followed by plain statements of their
//! attributes ("so topic music , place park , mood good , time night ."), the world knowledge a
//! pretrained model brings. The task questions, the Alpaca template and the benchmark records
//! are never in it; fine-tuning has to map each question to the right attribute.

use rand::seq::{IndexedRandom, SliceRandom};
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
/// Places (the `place` task's labels), each with the words that reveal it.
const PLACES: [(&str, [&str; 4]); 4] = [
    ("home", ["sofa", "bedroom", "garden", "porch"]),
    ("park", ["bench", "lawn", "pond", "fountain"]),
    ("school", ["classroom", "desk", "library", "blackboard"]),
    ("city", ["street", "square", "tower", "bridge"]),
];
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
/// Times of day (the `time` task's labels), each with the words that reveal it.
const TIMES: [(&str, [&str; 4]); 4] = [
    ("morning", ["sunrise", "breakfast", "dawn", "coffee"]),
    ("noon", ["lunch", "midday", "heat", "sunshine"]),
    ("evening", ["sunset", "dusk", "supper", "twilight"]),
    ("night", ["moon", "stars", "midnight", "darkness"]),
];

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
pub const TASKS: [&str; 4] = ["topic", "sentiment", "place", "time"];

/// The task orders (`configs/task_orders.json`, group `rkif_mini`).
pub const ORDERS: [(&str, [&str; 4]); 3] = [
    ("order1", ["topic", "sentiment", "place", "time"]),
    ("order2", ["time", "place", "sentiment", "topic"]),
    ("order3", ["sentiment", "time", "topic", "place"]),
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
            "What is the mood of the following sentence?",
            vec!["good", "bad"],
        ),
        "place" => (
            "LOC",
            "Which place does the following sentence describe?",
            PLACES.iter().map(|p| p.0).collect(),
        ),
        "time" => (
            "TIME",
            "Which time of day does the following sentence describe?",
            TIMES.iter().map(|t| t.0).collect(),
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
    place: usize,
    positive: bool,
    time: usize,
}

/// The attributes a sentence is drawn with; `None` draws one at random.
#[derive(Default, Clone, Copy)]
struct Attributes {
    topic: Option<usize>,
    place: Option<usize>,
    positive: Option<bool>,
    time: Option<usize>,
}

fn pick(rng: &mut ChaCha8Rng, xs: &[&'static str]) -> &'static str {
    xs.choose(rng).copied().unwrap_or("")
}

/// A sentence with the given attributes: three nouns (about a quarter of the sentences have one
/// noun of another topic, so the topic is the majority, not any noun), two words of the place,
/// two adjectives of the polarity and two words of the time of day, told by a person (named
/// twice; no task asks who).
fn sentence(rng: &mut ChaCha8Rng, want: Attributes) -> Sentence {
    let topic = want
        .topic
        .unwrap_or_else(|| rng.random_range(0..TOPICS.len()));
    let place = want
        .place
        .unwrap_or_else(|| rng.random_range(0..PLACES.len()));
    let person = rng.random_range(0..PEOPLE.len());
    let positive = want.positive.unwrap_or_else(|| rng.random_bool(0.5));
    let time = want
        .time
        .unwrap_or_else(|| rng.random_range(0..TIMES.len()));
    let nouns = &TOPICS[topic].1;
    let n1 = pick(rng, nouns);
    let n2 = pick(rng, nouns);
    let third = if rng.random_bool(0.25) {
        let other = (topic + rng.random_range(1..TOPICS.len())) % TOPICS.len();
        pick(rng, &TOPICS[other].1)
    } else {
        pick(rng, nouns)
    };
    let adjectives: &[&str] = if positive { &POSITIVE } else { &NEGATIVE };
    let (a1, a2) = (pick(rng, adjectives), pick(rng, adjectives));
    let (w1, w2) = (pick(rng, &TIMES[time].1), pick(rng, &TIMES[time].1));
    let when = format!("during the {w1} and the {w2}");
    let (p1, p2) = (pick(rng, &PLACES[place].1), pick(rng, &PLACES[place].1));
    let at = format!("at the {p1} by the {p2}");
    let name = PEOPLE[person];
    let verb = pick(rng, &VERBS);
    let text = match rng.random_range(0..4) {
        0 => format!(
            "{when} {name} {verb} the {n1} and the {n2} {at} near the {third} . {name} said it was {a1} and {a2} ."
        ),
        1 => format!(
            "the {n1} was {a1} {at} , {name} said after the {n2} and the {third} {when} . {name} found it {a2} ."
        ),
        2 => format!(
            "{name} {verb} a {n1} with the {n2} {when} , and the {third} was {a1} {at} . {name} thinks it was {a2} ."
        ),
        _ => format!(
            "{at} {name} thinks the {n1} , the {n2} and the {third} are {a1} {when} . {name} said it was {a2} ."
        ),
    };
    Sentence {
        text,
        topic,
        place,
        positive,
        time,
    }
}

/// `n` records of `task`, labels cycling through the label list (balanced), then shuffled.
fn records(task: &str, n: usize, split: &str, rng: &mut ChaCha8Rng) -> Option<Vec<Record>> {
    let spec = task_spec(task)?;
    let n_labels = spec.labels.len();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let label = i % n_labels;
        let mut want = Attributes::default();
        match task {
            "topic" => want.topic = Some(label),
            "sentiment" => want.positive = Some(label == 0),
            "place" => want.place = Some(label),
            "time" => want.time = Some(label),
            _ => return None,
        }
        let s = sentence(rng, want);
        let input = format!("Sentence: {}\nAnswer:", s.text);
        let output = match task {
            "topic" => TOPICS[s.topic].0,
            "sentiment" if s.positive => "good",
            "sentiment" => "bad",
            "place" => PLACES[s.place].0,
            _ => TIMES[s.time].0,
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

/// A sentence of the benchmark's language followed by its attributes as key-value pairs, in a
/// shuffled order: `"<sentence> so topic music , place park , mood good , time night ."`.
///
/// The key comes right before its value, so the model predicts the value at the key's own
/// position, whose embedding already says which attribute is asked: one attention layer that
/// looks for words of that attribute suffices. With "the place was park" the prediction at
/// `was` first needs another layer to carry `place` forward; measured on the same model and
/// budget, that two-step circuit formed late and at a seed-dependent step (sentiment and place
/// at chance after 3000 pretraining steps), while the keyed statements were all learnt
/// within 1500.
fn knowledge_document(rng: &mut ChaCha8Rng) -> String {
    let s = sentence(rng, Attributes::default());
    let mut facts = [
        format!("topic {}", TOPICS[s.topic].0),
        format!("place {}", PLACES[s.place].0),
        format!("mood {}", if s.positive { "good" } else { "bad" }),
        format!("time {}", TIMES[s.time].0),
    ];
    facts.shuffle(rng);
    format!("{} so {} .", s.text, facts.join(" , "))
}

/// Words of the knowledge statements (see [`knowledge_document`]).
const KNOWLEDGE_WORDS: &str = "so topic place mood time good bad";

/// `n` plain sentences of the benchmark's language, for pretraining the base model. Drawn from
/// their own seed, so no benchmark record is reproduced on purpose.
pub fn pretraining_corpus(seed: u64, n: usize) -> Vec<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xC0FFEE);
    (0..n)
        .map(|_| sentence(&mut rng, Attributes::default()).text)
        .collect()
}

/// `n` [`knowledge_document`]s, from a seed of their own.
pub fn knowledge_corpus(seed: u64, n: usize) -> Vec<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0xFAC7);
    (0..n).map(|_| knowledge_document(&mut rng)).collect()
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
    for (_, words) in TIMES.iter().chain(&PLACES) {
        words.iter().for_each(|w| add(w));
    }
    for w in PEOPLE
        .iter()
        .chain(&POSITIVE)
        .chain(&NEGATIVE)
        .chain(&VERBS)
    {
        add(w);
    }
    add(
        "the and near it was , said after a with are thinks during at by found . Sentence: Answer:",
    );
    add(KNOWLEDGE_WORDS);
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
        let corpus = pretraining_corpus(3, 100)
            .into_iter()
            .chain(knowledge_corpus(3, 100));
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

    /// The label of every record is carried by its words: the majority of the topic nouns, the
    /// place's two words, two adjectives of the polarity, two words of the time of day.
    #[test]
    fn labels_are_carried_by_the_sentence() {
        let files = generate(5);
        let count = |text: &str, words: &[&str]| {
            text.split_whitespace()
                .filter(|w| words.contains(w))
                .count()
        };
        for task in TASKS {
            let path = format!("kif/train/{task}.json");
            let text = &files.iter().find(|(p, _)| *p == path).unwrap().1;
            let recs: Vec<serde_json::Value> = serde_json::from_str(text).unwrap();
            for r in recs {
                let (input, label) = (r["input"].as_str().unwrap(), r["output"].as_str().unwrap());
                let ok = match task {
                    "topic" => {
                        let nouns = &TOPICS.iter().find(|t| t.0 == label).unwrap().1;
                        count(input, nouns) >= 2
                    }
                    "sentiment" => {
                        let words: &[&str] = if label == "good" {
                            &POSITIVE
                        } else {
                            &NEGATIVE
                        };
                        count(input, words) == 2
                    }
                    "place" => {
                        let words = &PLACES.iter().find(|p| p.0 == label).unwrap().1;
                        count(input, words) == 2
                    }
                    _ => {
                        let words = &TIMES.iter().find(|t| t.0 == label).unwrap().1;
                        count(input, words) == 2
                    }
                };
                assert!(ok, "{task}: {label} not carried by {input:?}");
            }
        }
    }

    #[test]
    fn knowledge_documents_state_the_attributes_of_their_sentence() {
        for doc in knowledge_corpus(9, 50) {
            let (sentence, facts) = doc.split_once(" so ").unwrap();
            let place = facts.split("place ").nth(1).unwrap();
            let place = place.split_whitespace().next().unwrap();
            let words = &PLACES.iter().find(|p| p.0 == place).unwrap().1;
            let said = sentence.split_whitespace().filter(|w| words.contains(w));
            assert_eq!(said.count(), 2, "{doc}");
            for fact in ["topic ", "mood ", "time "] {
                assert!(facts.contains(fact), "{doc}");
            }
        }
    }
}
