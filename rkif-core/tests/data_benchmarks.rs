//! The `data` module against the real benchmark folder and against malformed folders.
//!
//! The folder comes from `RKIF_DATA_DIR` (default `../shared/data/cl_benchmark` relative
//! to the workspace root). Expected record counts are read from the folder's README.md
//! (kif tasks) and MANIFEST.json (every file), never written here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rkif_core::data::{Benchmark, Split, Suite, TaskData};
use rkif_core::Error;
use serde_json::{json, Value};

fn data_dir() -> PathBuf {
    match std::env::var_os("RKIF_DATA_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/cl_benchmark"),
    }
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// MANIFEST.json's `files` object: relative path -> entry.
fn manifest(dir: &Path) -> serde_json::Map<String, Value> {
    match read_json(&dir.join("MANIFEST.json")).get("files") {
        Some(Value::Object(files)) => files.clone(),
        other => panic!("MANIFEST.json has no `files` object: {other:?}"),
    }
}

fn manifest_records(files: &serde_json::Map<String, Value>, path: &str) -> usize {
    files
        .get(path)
        .and_then(|entry| entry.get("records"))
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("MANIFEST.json has no record count for {path}")) as usize
}

/// Counts from the README's kif table: task -> (train, dev, test, dev records with a
/// non-label output). A cell such as `500 (6 have label "-")` gives 500 and 6.
fn readme_counts(dir: &Path) -> BTreeMap<String, (usize, usize, usize, usize)> {
    let readme = dir.join("../README.md");
    let text = std::fs::read_to_string(&readme).unwrap_or_else(|e| panic!("{readme:?}: {e}"));
    let leading_number = |cell: &str| -> Option<usize> {
        let digits: String = cell
            .trim()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // "| task | type | labels | train | dev | test |" splits into 8 cells.
        if cells.len() != 8 {
            continue;
        }
        let (Some(train), Some(dev), Some(test)) = (
            leading_number(cells[4]),
            leading_number(cells[5]),
            leading_number(cells[6]),
        ) else {
            continue;
        };
        let unlabelled = cells[5]
            .split_once('(')
            .filter(|(_, note)| note.contains("have label"))
            .and_then(|(_, note)| leading_number(note))
            .unwrap_or(0);
        counts.insert(cells[1].to_string(), (train, dev, test, unlabelled));
    }
    counts
}

fn open_real() -> Benchmark {
    let dir = data_dir();
    Benchmark::open(&dir).unwrap_or_else(|e| panic!("opening {dir:?}: {e}"))
}

fn check_files_match_manifest(task: &TaskData, files: &serde_json::Map<String, Value>) {
    for file in &task.files {
        let entry = files
            .get(&file.path)
            .unwrap_or_else(|| panic!("{} is not in MANIFEST.json", file.path));
        assert_eq!(
            entry.get("sha256"),
            Some(&json!(file.sha256)),
            "{}",
            file.path
        );
        assert_eq!(
            entry.get("bytes"),
            Some(&json!(file.bytes)),
            "{}",
            file.path
        );
    }
}

#[test]
fn every_kif_task_loads_with_the_readme_counts() {
    let bench = open_real();
    let dir = data_dir();
    let files = manifest(&dir);
    let expected = readme_counts(&dir);
    let tasks = bench.tasks(Suite::Long);
    assert_eq!(tasks.len(), 15, "the Long Sequence benchmark has 15 tasks");
    assert_eq!(
        tasks.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
        expected.keys().cloned().collect::<Vec<_>>(),
        "README table and kif_tasks.json list the same tasks"
    );
    for name in tasks {
        let task = bench
            .load_task(name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let (train, dev, test, unlabelled) = expected[name];
        assert_eq!(task.train.len(), train, "{name} train");
        assert_eq!(task.dev.len() + task.excluded.len(), dev, "{name} dev");
        assert_eq!(task.excluded.len(), unlabelled, "{name} dev exclusions");
        assert_eq!(task.test.len(), test, "{name} test");
        for split in Split::ALL {
            let path = format!("kif/{split}/{name}.json");
            let kept = task.split(split).len();
            let dropped = task.excluded.iter().filter(|x| x.file == path).count();
            assert_eq!(kept + dropped, manifest_records(&files, &path), "{path}");
        }
        check_files_match_manifest(&task, &files);
        let labels = task.info.labels.as_ref().expect("kif tasks have labels");
        for example in task.train.iter().chain(&task.dev).chain(&task.test) {
            assert!(labels.contains(&example.output), "{name} {}", example.id);
            assert_eq!(example.instruction, task.info.instruction, "{}", example.id);
        }
    }
}

#[test]
fn mnli_dev_records_without_a_gold_label_are_excluded_and_reported() {
    let task = open_real().load_task("mnli").expect("mnli loads");
    assert!(!task.excluded.is_empty());
    for exclusion in &task.excluded {
        assert_eq!(exclusion.file, "kif/dev/mnli.json");
        assert!(exclusion.reason.contains("\"-\""), "{}", exclusion.reason);
        assert!(exclusion.id.starts_with("MNLI_"), "{}", exclusion.id);
        assert!(task.dev.iter().all(|e| e.id != exclusion.id));
    }
}

#[test]
fn manifest_notes_and_dev_test_identity_become_caveats() {
    let bench = open_real();
    let yahoo = bench.load_task("yahoo").expect("yahoo loads");
    assert_eq!(yahoo.dev, yahoo.test);
    assert!(yahoo
        .caveats
        .iter()
        .any(|c| c.contains("identical to the dev split")));
    assert!(yahoo.caveats.iter().any(|c| c.contains("PROXY")));
    let dbpedia = bench.load_task("dbpedia").expect("dbpedia loads");
    assert!(dbpedia
        .caveats
        .iter()
        .any(|c| c.starts_with("kif/test/dbpedia.json: RECONSTRUCTED")));
    let agnews = bench.load_task("agnews").expect("agnews loads");
    assert!(agnews.caveats.is_empty(), "{:?}", agnews.caveats);
}

#[test]
fn every_superni_task_loads_with_the_manifest_counts() {
    let bench = open_real();
    let files = manifest(bench.root());
    let tasks = bench.tasks(Suite::SuperNi);
    assert_eq!(tasks.len(), 15);
    for name in tasks {
        let task = bench
            .load_task(name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let [train_file, test_file] = &task.files[..] else {
            panic!(
                "{name}: expected a train and a test file, got {:?}",
                task.files
            );
        };
        assert!(train_file
            .path
            .starts_with(&format!("superni_raw/train/{name}_")));
        assert_eq!(task.train.len(), manifest_records(&files, &train_file.path));
        assert_eq!(task.test.len(), manifest_records(&files, &test_file.path));
        assert_eq!(task.dev, task.test, "{name}: dev is the test split");
        assert!(task
            .caveats
            .iter()
            .any(|c| c.contains("dev split = test split")));
        assert_eq!(task.info.labels, None);
        assert!(!task.info.instruction.is_empty());
        check_files_match_manifest(&task, &files);
    }
}

/// The raw instances of `task`'s training file, read independently of rkif.
fn raw_train_instances(bench: &Benchmark, task: &TaskData) -> Vec<Value> {
    let raw = read_json(&bench.root().join(&task.files[0].path));
    assert_eq!(
        task.info.instruction,
        raw["Definition"][0].as_str().expect("text")
    );
    raw["Instances"].as_array().expect("Instances").clone()
}

#[test]
fn superni_outputs_are_the_first_reference_output() {
    let bench = open_real();
    // task002 gives lists of reference answers, some with several.
    let task = bench.load_task("task002").expect("task002 loads");
    let instances = raw_train_instances(&bench, &task);
    assert_eq!(instances.len(), task.train.len());
    assert!(instances
        .iter()
        .any(|i| i["output"].as_array().is_some_and(|o| o.len() > 1)));
    for (instance, example) in instances.iter().zip(&task.train) {
        assert_eq!(instance["output"][0], json!(example.output));
        assert_eq!(instance["id"], json!(example.id));
        assert_eq!(instance["input"], json!(example.input));
    }
    // task363 gives one string per instance: whole labels, unlike TaSL's truncated "P"/"N".
    let task = bench.load_task("task363").expect("task363 loads");
    let instances = raw_train_instances(&bench, &task);
    for (instance, example) in instances.iter().zip(&task.train) {
        assert_eq!(instance["output"], json!(example.output));
    }
    assert!(task
        .train
        .iter()
        .all(|e| e.output == "POS" || e.output == "NEG"));
}

#[test]
fn named_orders_match_the_source_lists_and_resolve_to_known_tasks() {
    let bench = open_real();
    let names: Vec<&str> = bench.orders().iter().map(|o| o.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "standard-1",
            "standard-2",
            "standard-3",
            "long-1",
            "long-2",
            "long-3",
            "superni-1",
            "superni-2"
        ]
    );
    let raw = read_json(&bench.root().join("configs/task_orders.json"));
    let list = |group: &str, key: &str| -> Vec<String> {
        serde_json::from_value(raw[group][key].clone()).expect("a list of task ids")
    };
    // The O-LoRA lists are an independent copy of the Recurrent-KIF orders 4-6 and 3.
    for i in 1..=3 {
        let order = bench
            .order(&format!("standard-{i}"))
            .expect("standard order");
        assert_eq!(order.tasks, list("olora_standard", &format!("order{i}")));
        assert_eq!(
            order.tasks,
            list("recurrent_kif", &format!("order{}", i + 3))
        );
        let order = bench.order(&format!("long-{i}")).expect("long order");
        assert_eq!(order.tasks, list("recurrent_kif", &format!("order{i}")));
        assert_eq!(order.tasks.len(), 15);
    }
    assert_eq!(
        bench.order("long-3").expect("long-3").tasks,
        list("olora_long", "long")
    );
    for order in bench.orders() {
        let mut suite_tasks = bench.tasks(order.suite);
        let mut tasks: Vec<&str> = order.tasks.iter().map(String::as_str).collect();
        suite_tasks.sort_unstable();
        tasks.sort_unstable();
        assert_eq!(
            tasks, suite_tasks,
            "{} is a permutation of its suite",
            order.name
        );
    }
    let listing = bench.to_string();
    assert!(listing.contains(
        "standard-1 (Recurrent-KIF order 4 = O-LoRA order 1): dbpedia -> amazon -> yahoo -> agnews"
    ));
}

#[test]
fn data_files_read_are_hashed_once_each() {
    let bench = open_real();
    let at_open: Vec<String> = bench.files_read().into_iter().map(|f| f.path).collect();
    assert_eq!(
        at_open,
        [
            "MANIFEST.json",
            "configs/kif_tasks.json",
            "configs/task_orders.json"
        ]
    );
    bench.load_task("cb").expect("cb loads");
    bench.load_task("cb").expect("cb loads again");
    let paths: Vec<String> = bench.files_read().into_iter().map(|f| f.path).collect();
    assert_eq!(
        paths[3..],
        ["kif/train/cb.json", "kif/dev/cb.json", "kif/test/cb.json"]
    );
}

// ---------------------------------------------------------------------------------------
// Malformed folders: each must give an error naming the file and the record.

/// A valid minimal folder: one task `toy` with labels yes/no, and an order file.
struct Toy {
    dir: tempfile::TempDir,
}

impl Toy {
    fn new() -> Self {
        let toy = Toy {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        toy.write(
            "configs/kif_tasks.json",
            &json!({"toy": {"type": "SC", "instruction": "Yes or no?\n", "labels": ["yes", "no"]}}),
        );
        toy.write(
            "configs/task_orders.json",
            &json!({"recurrent_kif": {"order1": ["toy"]}}),
        );
        for split in ["train", "dev", "test"] {
            toy.write(
                &format!("kif/{split}/toy.json"),
                &json!([record("a", "yes"), record("b", "no")]),
            );
        }
        toy
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, relative: &str, value: &Value) {
        self.write_text(relative, &value.to_string());
    }

    fn write_text(&self, relative: &str, text: &str) {
        let path = self.root().join(relative);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, text).expect("write");
    }

    /// The error of loading task `toy`.
    fn load_error(&self) -> Error {
        let bench = Benchmark::open(self.root()).expect("the folder opens");
        match bench.load_task("toy") {
            Ok(task) => panic!("expected an error, loaded {task:?}"),
            Err(e) => e,
        }
    }

    fn open_error(&self) -> Error {
        match Benchmark::open(self.root()) {
            Ok(bench) => panic!("expected an error, opened {bench:?}"),
            Err(e) => e,
        }
    }
}

fn record(id: &str, output: &str) -> Value {
    json!({"id": id, "instruction": "Yes or no?\n", "input": "text", "output": output})
}

fn assert_format_error(error: &Error, file: &str, parts: &[&str]) {
    let Error::Format { path, what } = error else {
        panic!("expected a format error, got {error:?}");
    };
    assert!(path.ends_with(file), "{path:?} should name {file}");
    for part in parts {
        assert!(what.contains(part), "{what:?} should mention {part:?}");
    }
}

#[test]
fn the_valid_toy_folder_loads() {
    let toy = Toy::new();
    let bench = Benchmark::open(toy.root()).expect("opens");
    let task = bench.load_task("toy").expect("loads");
    assert_eq!(task.train.len(), 2);
    assert_eq!(bench.order("long-1").expect("long-1").tasks, ["toy"]);
    assert!(bench.tasks(Suite::SuperNi).is_empty());
}

#[test]
fn a_missing_split_file_is_an_io_error_naming_it() {
    let toy = Toy::new();
    std::fs::remove_file(toy.root().join("kif/test/toy.json")).expect("rm");
    match toy.load_error() {
        Error::Io { path, .. } => assert!(path.ends_with("kif/test/toy.json"), "{path:?}"),
        other => panic!("expected an io error, got {other:?}"),
    }
}

#[test]
fn a_missing_folder_or_config_is_an_io_error() {
    let toy = Toy::new();
    assert!(matches!(
        Benchmark::open(toy.root().join("nowhere")),
        Err(Error::Io { .. })
    ));
    std::fs::remove_file(toy.root().join("configs/task_orders.json")).expect("rm");
    match toy.open_error() {
        Error::Io { path, .. } => assert!(path.ends_with("configs/task_orders.json")),
        other => panic!("expected an io error, got {other:?}"),
    }
}

#[test]
fn invalid_json_names_the_file_and_position() {
    let toy = Toy::new();
    toy.write_text("kif/train/toy.json", "[{\"id\": \"a\",");
    assert_format_error(
        &toy.load_error(),
        "kif/train/toy.json",
        &["not valid JSON", "line 1"],
    );
}

#[test]
fn a_file_that_is_not_a_list_of_records_is_refused() {
    let toy = Toy::new();
    toy.write("kif/dev/toy.json", &json!({"id": "a"}));
    assert_format_error(
        &toy.load_error(),
        "kif/dev/toy.json",
        &["expected a JSON array"],
    );
    toy.write("kif/dev/toy.json", &json!([record("a", "yes"), "text"]));
    assert_format_error(
        &toy.load_error(),
        "kif/dev/toy.json",
        &["record 1", "a string"],
    );
}

#[test]
fn a_missing_field_names_the_record_and_field() {
    let toy = Toy::new();
    toy.write(
        "kif/train/toy.json",
        &json!([record("a", "yes"), {"id": "b", "instruction": "", "input": "x"}]),
    );
    assert_format_error(
        &toy.load_error(),
        "kif/train/toy.json",
        &["record 1 (id \"b\")", "field `output` is missing"],
    );
}

#[test]
fn a_field_of_the_wrong_type_names_the_record_and_field() {
    let toy = Toy::new();
    let mut bad = record("b", "no");
    bad["input"] = json!(7);
    toy.write("kif/test/toy.json", &json!([record("a", "yes"), bad]));
    assert_format_error(
        &toy.load_error(),
        "kif/test/toy.json",
        &["record 1 (id \"b\")", "field `input` is a number"],
    );
}

#[test]
fn an_empty_split_is_refused() {
    let toy = Toy::new();
    toy.write("kif/train/toy.json", &json!([]));
    assert_format_error(&toy.load_error(), "kif/train/toy.json", &["no records"]);
}

#[test]
fn duplicate_ids_are_refused() {
    let toy = Toy::new();
    toy.write(
        "kif/train/toy.json",
        &json!([record("a", "yes"), record("a", "no")]),
    );
    assert_format_error(
        &toy.load_error(),
        "kif/train/toy.json",
        &["record 1 (id \"a\")", "duplicate id", "record 0"],
    );
}

#[test]
fn an_unknown_label_is_an_error_in_train_and_an_exclusion_in_dev() {
    let toy = Toy::new();
    toy.write(
        "kif/train/toy.json",
        &json!([record("a", "yes"), record("b", "maybe")]),
    );
    assert_format_error(
        &toy.load_error(),
        "kif/train/toy.json",
        &["record 1 (id \"b\")", "\"maybe\"", "yes, no"],
    );

    let toy = Toy::new();
    toy.write(
        "kif/dev/toy.json",
        &json!([record("a", "yes"), record("b", "-")]),
    );
    let task = Benchmark::open(toy.root())
        .and_then(|bench| bench.load_task("toy"))
        .expect("loads with an exclusion");
    assert_eq!(task.dev.len(), 1);
    assert_eq!(task.excluded.len(), 1);
    assert_eq!(task.excluded[0].file, "kif/dev/toy.json");
    assert_eq!(task.excluded[0].id, "b");
    assert_eq!(task.excluded[0].record, 1);

    toy.write("kif/dev/toy.json", &json!([record("b", "-")]));
    assert_format_error(
        &toy.load_error(),
        "kif/dev/toy.json",
        &["all 1 were excluded"],
    );
}

#[test]
fn a_bad_task_config_names_the_task_and_field() {
    let toy = Toy::new();
    toy.write(
        "configs/kif_tasks.json",
        &json!({"toy": {"type": "SC", "instruction": "?", "labels": "yes"}}),
    );
    assert_format_error(
        &toy.open_error(),
        "configs/kif_tasks.json",
        &["task `toy`", "field `labels` is a string"],
    );
    toy.write(
        "configs/kif_tasks.json",
        &json!({"toy": {"type": "SC", "labels": ["a"]}}),
    );
    assert_format_error(
        &toy.open_error(),
        "configs/kif_tasks.json",
        &["task `toy`", "field `instruction` is missing"],
    );
}

#[test]
fn an_order_naming_an_unknown_task_is_refused() {
    let toy = Toy::new();
    toy.write(
        "configs/task_orders.json",
        &json!({"recurrent_kif": {"order1": ["toy", "nosuch"]}}),
    );
    assert_format_error(
        &toy.open_error(),
        "configs/task_orders.json",
        &["recurrent_kif.order1", "long-1", "nosuch", "known: toy"],
    );
    toy.write(
        "configs/task_orders.json",
        &json!({"recurrent_kif": {"order1": ["toy", "toy"]}}),
    );
    assert_format_error(
        &toy.open_error(),
        "configs/task_orders.json",
        &["listed twice"],
    );
}

#[test]
fn unknown_names_are_data_errors_listing_what_exists() {
    let toy = Toy::new();
    let bench = Benchmark::open(toy.root()).expect("opens");
    match bench.load_task("nosuch") {
        Err(Error::Data(what)) => assert!(what.contains("nosuch") && what.contains("toy")),
        other => panic!("expected a data error, got {other:?}"),
    }
    match bench.order("long-9") {
        Err(Error::Data(what)) => assert!(what.contains("long-9") && what.contains("long-1")),
        other => panic!("expected a data error, got {other:?}"),
    }
    assert!(matches!("medium".parse::<Suite>(), Err(Error::Data(_))));
    assert_eq!("superni".parse::<Suite>().ok(), Some(Suite::SuperNi));
}

#[test]
fn a_file_changed_after_the_manifest_is_refused() {
    let toy = Toy::new();
    toy.write(
        "MANIFEST.json",
        &json!({"files": {"kif/train/toy.json": {"sha256": "00", "note": "n"}}}),
    );
    assert_format_error(
        &toy.load_error(),
        "kif/train/toy.json",
        &["differs from 00 in MANIFEST.json"],
    );
}

/// A SuperNI task file with the given instances.
fn superni_task(instances: Value) -> Value {
    json!({"Definition": ["Say yes."], "Categories": ["Answering"], "Instances": instances})
}

#[test]
fn superni_files_are_checked_too() {
    let toy = Toy::new();
    let file = "superni_raw/train/task001_toy.json";
    let good = superni_task(json!([{"id": "task001-a", "input": "x", "output": ["yes", "y"]}]));
    toy.write(file, &good);
    toy.write("superni_raw/test/task001_toy.json", &good);
    let bench = Benchmark::open(toy.root()).expect("opens");
    assert_eq!(bench.tasks(Suite::SuperNi), ["task001"]);
    let task = bench.load_task("task001").expect("loads");
    assert_eq!(task.train[0].output, "yes");
    assert_eq!(task.train[0].instruction, "Say yes.");
    assert_eq!(task.info.kind, "Answering");
    assert_eq!(task.dev, task.test);

    toy.write(
        file,
        &superni_task(json!([{"id": "task001-a", "input": "x", "output": "yes"}])),
    );
    let task = Benchmark::open(toy.root())
        .and_then(|bench| bench.load_task("task001"))
        .expect("a single output string is accepted");
    assert_eq!(task.train[0].output, "yes");

    toy.write(
        file,
        &superni_task(json!([{"id": "task001-a", "input": "x", "output": []}])),
    );
    let error = Benchmark::open(toy.root())
        .and_then(|bench| bench.load_task("task001"))
        .expect_err("an empty output list is refused");
    assert_format_error(&error, file, &["record 0 (id \"task001-a\")", "empty list"]);

    toy.write(file, &json!({"Instances": []}));
    let error = Benchmark::open(toy.root())
        .and_then(|bench| bench.load_task("task001"))
        .expect_err("a missing definition is refused");
    assert_format_error(&error, file, &["field `Definition` is missing"]);
}
