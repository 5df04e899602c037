//! `events.jsonl`: what happened during training, one JSON object per line.
//!
//! The first line is a header (`{"kind":"header","schema_version":1,...}`); every other line
//! is an [`Event`] tagged by its `kind`. Lines are appended and flushed one at a time, so a
//! crash loses at most the line being written; the reader counts such a truncated final line
//! instead of failing, and [`EventWriter::open`] cuts it off before appending again.
//!
//! JSON has no NaN or infinity: fields that may be non-finite are `Option`s written as
//! `null`, and the writer refuses a non-finite value in a field that must be finite.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The newest `events.jsonl` schema version this rkif writes and reads.
///
/// Version 2 added [`Event::OuterStep`] (Recurrent-KIF's memory steps) and the `phase` of a
/// skipped step. Version 1 logs read as they are (no outer steps; skipped steps are inner).
pub const EVENTS_SCHEMA_VERSION: u32 = 2;

/// A header line is well under this; reading stops here if the first line is something else.
const MAX_HEADER_BYTES: u64 = 4096;

/// One training event. Tasks are indices in training order (names are in the manifest and
/// `metrics.json`); steps count optimiser steps within a task from 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// Training of a task begins.
    TaskStart(TaskStart),
    /// An optimiser step on the task's own data (an inner step).
    Step(StepEvent),
    /// An outer step: an optimiser step on a replay-memory batch (Recurrent-KIF).
    OuterStep(OuterStepEvent),
    /// A Recurrent-KIF round: inner steps, outer steps, fusion.
    Round(RoundEvent),
    /// A step that was skipped (the user's skip policy for non-finite values).
    SkippedStep(SkippedStep),
    /// Validation loss measured during training (model selection).
    ValLoss(ValLoss),
    /// Evaluation after training a task: one row of the accuracy matrix.
    Eval(EvalEvent),
    /// Training of a task ends.
    TaskEnd(TaskEnd),
}

/// Training of a task begins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStart {
    /// Task index in training order.
    pub task: usize,
    /// Task name.
    pub name: String,
    /// Training examples of the task.
    pub train_examples: usize,
    /// Replay-memory examples available to the outer loop (0 for the first task).
    pub memory_examples: usize,
    /// Optimiser steps planned for the task.
    pub planned_steps: usize,
}

/// An optimiser step on the task's own data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepEvent {
    /// Task index.
    pub task: usize,
    /// Optimiser step within the task, from 1.
    pub step: usize,
    /// Mean training loss of the step's batch (finite).
    pub loss: f64,
    /// Learning rate the step used.
    pub lr: f64,
    /// Global gradient L2 norm before clipping (finite).
    pub grad_norm: f64,
}

/// An outer (replay-memory) step of a Recurrent-KIF round. Outer steps do not advance the
/// task's step count: they follow inner step `step`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OuterStepEvent {
    /// Task index.
    pub task: usize,
    /// The inner step this outer step follows (the round's last inner step).
    pub step: usize,
    /// Outer steps within the task so far, this one included (from 1).
    pub outer_step: usize,
    /// Mean training loss of the memory batch (finite).
    pub loss: f64,
    /// Learning rate the step used.
    pub lr: f64,
    /// Global gradient L2 norm before clipping (finite).
    pub grad_norm: f64,
}

/// Which loop a step belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepPhase {
    /// A step on the task's own data.
    #[default]
    Inner,
    /// A step on the replay memory.
    Outer,
}

impl StepPhase {
    /// `inner` or `outer`.
    pub fn name(self) -> &'static str {
        match self {
            StepPhase::Inner => "inner",
            StepPhase::Outer => "outer",
        }
    }
}

/// A Recurrent-KIF round. Shares are fractions of all LoRA elements and sum to 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundEvent {
    /// Task index.
    pub task: usize,
    /// Round within the task, from 1.
    pub round: usize,
    /// Optimiser step (within the task) at which the round fused.
    pub step: usize,
    /// LoRA elements the masks cover.
    pub elements: u64,
    /// Elements the inner (new-task) mask marks important.
    pub inner_mask: u64,
    /// Elements the outer (memory) mask marks important.
    pub outer_mask: u64,
    /// How elements fell into the four fusion cases.
    pub shares: FusionShares,
    /// `|inner ∩ outer| / |inner ∪ outer|` (Jaccard); null when both masks are empty.
    pub overlap: Option<f64>,
    /// Where the round's time went.
    pub timings: RoundTimings,
}

/// Fractions of LoRA elements in each fusion case (see the fusion table in METHOD.md).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FusionShares {
    /// Inner important only: keeps the new-task update.
    pub inner_only: f64,
    /// Outer important only: keeps the replay update.
    pub outer_only: f64,
    /// Both important: merged, old tasks weighted higher.
    pub both: f64,
    /// Neither important: plain average.
    pub neither: f64,
}

/// Wall-clock seconds of a round's phases.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RoundTimings {
    /// Inner (new-task) steps with their importance updates.
    pub inner_seconds: f64,
    /// Outer (memory) steps with their importance updates.
    pub outer_seconds: f64,
    /// Masks and fusion.
    pub fusion_seconds: f64,
}

/// A skipped step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedStep {
    /// Task index.
    pub task: usize,
    /// The step that was skipped, within the task, from 1; for an outer step, the inner
    /// step it followed.
    pub step: usize,
    /// Inner or outer (absent in version 1 logs: inner).
    #[serde(default)]
    pub phase: StepPhase,
    /// Why, naming the tensor or value (`non-finite gradient in ...`).
    pub reason: String,
    /// The loss, null when it was not finite or not computed.
    pub loss: Option<f64>,
    /// The gradient norm, null when it was not finite or not computed.
    pub grad_norm: Option<f64>,
}

/// Validation loss on the held-out examples of the tasks seen so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValLoss {
    /// Task index being trained.
    pub task: usize,
    /// Optimiser step within the task at which the loss was measured.
    pub step: usize,
    /// Mean validation loss (finite).
    pub loss: f64,
    /// Validation examples the mean is over.
    pub examples: usize,
}

/// Evaluation after training task `after_task`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalEvent {
    /// The task just trained (the accuracy-matrix row).
    pub after_task: usize,
    /// Length `T`: accuracy on each task (a fraction), null where not evaluated.
    pub accuracy: Vec<Option<f64>>,
    /// Length `T`: test examples behind each accuracy, null where not evaluated.
    pub examples: Vec<Option<usize>>,
    /// Seconds the evaluation took.
    pub seconds: f64,
}

/// Training of a task ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEnd {
    /// Task index.
    pub task: usize,
    /// Optimiser steps taken (skipped steps excluded).
    pub steps: usize,
    /// Steps skipped by the skip policy.
    pub skipped_steps: usize,
    /// Wall-clock seconds of the task's training.
    pub seconds: f64,
}

impl Event {
    /// The first field that must be finite but is not, if any.
    pub fn non_finite_field(&self) -> Option<&'static str> {
        let finite = |v: f64| v.is_finite();
        let fields: Vec<(&'static str, bool)> = match self {
            Event::TaskStart(_) => vec![],
            Event::Step(s) => vec![
                ("loss", finite(s.loss)),
                ("lr", finite(s.lr)),
                ("grad_norm", finite(s.grad_norm)),
            ],
            Event::OuterStep(s) => vec![
                ("loss", finite(s.loss)),
                ("lr", finite(s.lr)),
                ("grad_norm", finite(s.grad_norm)),
            ],
            Event::Round(r) => vec![
                ("shares.inner_only", finite(r.shares.inner_only)),
                ("shares.outer_only", finite(r.shares.outer_only)),
                ("shares.both", finite(r.shares.both)),
                ("shares.neither", finite(r.shares.neither)),
                ("overlap", r.overlap.is_none_or(finite)),
                ("timings.inner_seconds", finite(r.timings.inner_seconds)),
                ("timings.outer_seconds", finite(r.timings.outer_seconds)),
                ("timings.fusion_seconds", finite(r.timings.fusion_seconds)),
            ],
            // Options: a non-finite value is written as null on purpose.
            Event::SkippedStep(_) => vec![],
            Event::ValLoss(v) => vec![("loss", finite(v.loss))],
            Event::Eval(e) => vec![
                ("accuracy", e.accuracy.iter().all(|a| a.is_none_or(finite))),
                ("seconds", finite(e.seconds)),
            ],
            Event::TaskEnd(t) => vec![("seconds", finite(t.seconds))],
        };
        fields.into_iter().find(|(_, ok)| !ok).map(|(name, _)| name)
    }

    /// The `kind` tag this event is written with.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::TaskStart(_) => "task_start",
            Event::Step(_) => "step",
            Event::OuterStep(_) => "outer_step",
            Event::Round(_) => "round",
            Event::SkippedStep(_) => "skipped_step",
            Event::ValLoss(_) => "val_loss",
            Event::Eval(_) => "eval",
            Event::TaskEnd(_) => "task_end",
        }
    }
}

/// The first line of `events.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogHeader {
    /// Version of the event schema.
    pub schema_version: u32,
    /// The rkif version that started the log.
    pub rkif_version: String,
}

/// The header line as written: the header tagged with `"kind": "header"`.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum HeaderLine {
    Header(LogHeader),
}

/// The events of a log as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct EventLog {
    /// The header; `None` only for an empty log (a crash before the header was complete).
    pub header: Option<LogHeader>,
    /// The events in the order written.
    pub events: Vec<Event>,
    /// 1 when the final line was cut off (a crash mid-write) and ignored, else 0.
    pub truncated_lines: usize,
}

/// Parses the bytes of an `events.jsonl`; `source` names them in errors.
///
/// A line that does not parse (or is not UTF-8) is an [`Error::Format`] naming `source` and
/// the line number (from 1), except a final line without its newline, which a crash can
/// leave: that one is counted in [`EventLog::truncated_lines`]. Blank lines are skipped. A
/// header newer than this rkif is [`Error::SchemaVersion`].
pub fn parse_events(source: &Path, bytes: &[u8]) -> Result<EventLog> {
    let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    // `split` yields an empty piece after a final newline; without one, the last piece is
    // a line the writer never finished.
    let ends_cleanly = lines.last().is_some_and(|last| last.is_empty());
    if ends_cleanly {
        lines.pop();
    }
    let mut log = EventLog {
        header: None,
        events: Vec::new(),
        truncated_lines: 0,
    };
    for (index, raw) in lines.iter().enumerate() {
        let number = index + 1;
        let is_unfinished_last = !ends_cleanly && number == lines.len();
        let parsed = std::str::from_utf8(raw)
            .map_err(|e| Error::format(source, format!("line {number}: not UTF-8 text: {e}")))
            .and_then(|line| {
                if line.trim().is_empty() {
                    Ok(())
                } else if log.header.is_none() {
                    parse_header(source, number, line).map(|h| log.header = Some(h))
                } else {
                    serde_json::from_str::<Event>(line)
                        .map(|e| log.events.push(e))
                        .map_err(|e| Error::format(source, format!("line {number}: {e}")))
                }
            });
        match parsed {
            Ok(()) => {}
            Err(Error::Format { .. }) if is_unfinished_last => log.truncated_lines += 1,
            Err(e) => return Err(e),
        }
    }
    Ok(log)
}

/// The header's identifying fields, read before the rest so that a newer log is refused by
/// its version rather than by whatever else it changed.
#[derive(Deserialize)]
struct HeaderProbe {
    kind: String,
    schema_version: u32,
}

fn parse_header(source: &Path, number: usize, line: &str) -> Result<LogHeader> {
    let not_a_header = |what: String| {
        Error::format(
            source,
            format!("line {number}: expected the log header ({{\"kind\":\"header\",...}}): {what}"),
        )
    };
    let probe: HeaderProbe = serde_json::from_str(line).map_err(|e| not_a_header(e.to_string()))?;
    if probe.kind != "header" {
        return Err(not_a_header(format!("found kind `{}`", probe.kind)));
    }
    if probe.schema_version > EVENTS_SCHEMA_VERSION {
        return Err(Error::SchemaVersion {
            path: source.to_path_buf(),
            found: probe.schema_version,
            supported: EVENTS_SCHEMA_VERSION,
        });
    }
    let HeaderLine::Header(header) =
        serde_json::from_str(line).map_err(|e| not_a_header(e.to_string()))?;
    Ok(header)
}

/// Reads an `events.jsonl` file (see [`parse_events`]).
pub fn read_events(path: &Path) -> Result<EventLog> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_events(path, &bytes)
}

/// Appends events to an `events.jsonl`, one flushed line each.
#[derive(Debug)]
pub struct EventWriter {
    path: PathBuf,
    file: File,
    dropped_bytes: u64,
}

impl EventWriter {
    /// Opens `path` for appending, creating it with a header if it is new or empty. A final
    /// line cut off by a crash is removed first (see [`dropped_bytes`](Self::dropped_bytes));
    /// a log with another schema version is refused rather than mixed.
    pub fn open(path: &Path) -> Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let dropped_bytes = cut_unfinished_line(path, &mut file)?;
        let mut writer = Self {
            path: path.to_path_buf(),
            file,
            dropped_bytes,
        };
        let len = writer.len()?;
        if len == 0 {
            let header = HeaderLine::Header(LogHeader {
                schema_version: EVENTS_SCHEMA_VERSION,
                rkif_version: env!("CARGO_PKG_VERSION").to_owned(),
            });
            writer.write_line(&header)?;
        } else {
            writer.check_header()?;
        }
        Ok(writer)
    }

    /// Bytes of an unfinished final line removed when opening (0 after a clean shutdown).
    pub fn dropped_bytes(&self) -> u64 {
        self.dropped_bytes
    }

    /// Appends `event` as one line and flushes it. Refuses an event with a non-finite
    /// number where JSON needs a finite one.
    pub fn append(&mut self, event: &Event) -> Result<()> {
        if let Some(field) = event.non_finite_field() {
            return Err(Error::NonFinite {
                name: format!("{} event field `{field}`", event.kind()),
                what: format!("cannot be written to {}", self.path.display()),
            });
        }
        self.write_line(event)
    }

    /// Forces the lines written so far to disk (a checkpoint calls this; per-line flushes
    /// only reach the operating system).
    pub fn sync(&mut self) -> Result<()> {
        self.file.sync_data().map_err(|e| Error::io(&self.path, e))
    }

    fn write_line<T: Serialize>(&mut self, value: &T) -> Result<()> {
        let mut line = serde_json::to_vec(value)
            .map_err(|e| Error::format(&self.path, format!("cannot serialise event: {e}")))?;
        line.push(b'\n');
        // One write call per line: a crash leaves a prefix of this line, never a mix.
        self.file
            .write_all(&line)
            .and_then(|()| self.file.flush())
            .map_err(|e| Error::io(&self.path, e))
    }

    fn len(&self) -> Result<u64> {
        self.file
            .metadata()
            .map(|m| m.len())
            .map_err(|e| Error::io(&self.path, e))
    }

    fn check_header(&mut self) -> Result<()> {
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(|e| Error::io(&self.path, e))?;
        // The header is the first line; read just that, not the whole log.
        let mut first = Vec::new();
        BufReader::new(&self.file)
            .take(MAX_HEADER_BYTES)
            .read_until(b'\n', &mut first)
            .map_err(|e| Error::io(&self.path, e))?;
        let text = String::from_utf8_lossy(&first);
        let header = parse_header(&self.path, 1, &text)?;
        if header.schema_version != EVENTS_SCHEMA_VERSION {
            return Err(Error::format(
                &self.path,
                format!(
                    "log has schema version {}, this rkif writes {EVENTS_SCHEMA_VERSION}; \
                     start a new log rather than mix versions",
                    header.schema_version
                ),
            ));
        }
        self.file
            .seek(SeekFrom::End(0))
            .map_err(|e| Error::io(&self.path, e))?;
        Ok(())
    }
}

/// Truncates `file` after its last newline, returning the bytes removed.
fn cut_unfinished_line(path: &Path, file: &mut File) -> Result<u64> {
    let io = |e| Error::io(path, e);
    let len = file.metadata().map_err(io)?.len();
    let mut end = len;
    let mut chunk = [0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let size =
            usize::try_from(end - start).map_err(|_| Error::format(path, "log too large"))?;
        let window = chunk
            .get_mut(..size)
            .ok_or_else(|| Error::format(path, "log chunk out of range"))?;
        file.seek(SeekFrom::Start(start)).map_err(io)?;
        file.read_exact(window).map_err(io)?;
        if let Some(pos) = window.iter().rposition(|b| *b == b'\n') {
            end = start + pos as u64 + 1;
            break;
        }
        end = start;
    }
    if end < len {
        file.set_len(end).map_err(io)?;
    }
    file.seek(SeekFrom::End(0)).map_err(io)?;
    Ok(len - end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(step: usize, loss: f64) -> Event {
        Event::Step(StepEvent {
            task: 0,
            step,
            loss,
            lr: 3e-4,
            grad_norm: 0.5,
        })
    }

    fn round() -> Event {
        Event::Round(RoundEvent {
            task: 1,
            round: 1,
            step: 8,
            elements: 1000,
            inner_mask: 200,
            outer_mask: 200,
            shares: FusionShares {
                inner_only: 0.15,
                outer_only: 0.15,
                both: 0.05,
                neither: 0.65,
            },
            overlap: Some(50.0 / 350.0),
            timings: RoundTimings {
                inner_seconds: 1.0,
                outer_seconds: 0.5,
                fusion_seconds: 0.01,
            },
        })
    }

    fn all_kinds() -> Vec<Event> {
        vec![
            Event::TaskStart(TaskStart {
                task: 0,
                name: "dbpedia".into(),
                train_examples: 1000,
                memory_examples: 0,
                planned_steps: 1250,
            }),
            step(1, 2.5),
            round(),
            Event::SkippedStep(SkippedStep {
                task: 1,
                step: 9,
                phase: StepPhase::Outer,
                reason: "non-finite gradient in lora_A".into(),
                loss: None,
                grad_norm: None,
            }),
            Event::OuterStep(OuterStepEvent {
                task: 1,
                step: 8,
                outer_step: 3,
                loss: 1.5,
                lr: 2e-4,
                grad_norm: 0.7,
            }),
            Event::Eval(EvalEvent {
                after_task: 0,
                accuracy: vec![Some(0.9), None],
                examples: vec![Some(500), None],
                seconds: 3.0,
            }),
            Event::TaskEnd(TaskEnd {
                task: 0,
                steps: 1250,
                skipped_steps: 0,
                seconds: 60.0,
            }),
        ]
    }

    #[test]
    fn version_1_log_reads_with_inner_skipped_steps() {
        let text = concat!(
            r#"{"kind":"header","schema_version":1,"rkif_version":"0.1.0"}"#,
            "\n",
            r#"{"kind":"step","task":0,"step":1,"loss":2.0,"lr":0.001,"grad_norm":1.0}"#,
            "\n",
            r#"{"kind":"skipped_step","task":0,"step":2,"reason":"x","loss":null,"grad_norm":null}"#,
            "\n",
        );
        let log = parse_events(Path::new("old.jsonl"), text.as_bytes()).unwrap();
        assert_eq!(log.header.unwrap().schema_version, 1);
        match &log.events[1] {
            Event::SkippedStep(s) => assert_eq!(s.phase, StepPhase::Inner),
            other => panic!("expected a skipped step, got {other:?}"),
        }
    }

    #[test]
    fn every_kind_round_trips_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut writer = EventWriter::open(&path).unwrap();
        for event in all_kinds() {
            writer.append(&event).unwrap();
        }
        drop(writer);
        let log = read_events(&path).unwrap();
        assert_eq!(log.events, all_kinds());
        assert_eq!(log.truncated_lines, 0);
        assert_eq!(log.header.unwrap().schema_version, EVENTS_SCHEMA_VERSION);
        let text = std::fs::read_to_string(&path).unwrap();
        let second = text.lines().nth(2).unwrap();
        assert!(second.starts_with("{\"kind\":\"step\""), "{second}");
    }

    #[test]
    fn reopening_appends_after_the_existing_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        EventWriter::open(&path)
            .unwrap()
            .append(&step(1, 1.0))
            .unwrap();
        EventWriter::open(&path)
            .unwrap()
            .append(&step(2, 0.9))
            .unwrap();
        let log = read_events(&path).unwrap();
        assert_eq!(log.events, vec![step(1, 1.0), step(2, 0.9)]);
    }

    #[test]
    fn damaged_line_is_reported_with_file_and_line_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut writer = EventWriter::open(&path).unwrap();
        writer.append(&step(1, 1.0)).unwrap();
        writer.append(&step(2, 1.0)).unwrap();
        drop(writer);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines[2] = "{\"kind\":\"step\",\"task\":0";
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let err = read_events(&path).unwrap_err();
        match &err {
            Error::Format { path: p, what } => {
                assert_eq!(p, &path);
                assert!(what.starts_with("line 3:"), "{what}");
            }
            other => panic!("expected a format error, got {other:?}"),
        }
    }

    #[test]
    fn unknown_kind_is_a_damaged_line() {
        let text = "{\"kind\":\"header\",\"schema_version\":1,\"rkif_version\":\"0.1.0\"}\n\
                    {\"kind\":\"teleport\",\"task\":0}\n";
        let err = parse_events(Path::new("run/events.jsonl"), text.as_bytes()).unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("run/events.jsonl: line 2:"),
            "{message}"
        );
    }

    #[test]
    fn truncated_final_line_is_counted_and_cut_on_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut writer = EventWriter::open(&path).unwrap();
        writer.append(&step(1, 1.0)).unwrap();
        drop(writer);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"kind\":\"step\",\"ta").unwrap();
        drop(file);

        let log = read_events(&path).unwrap();
        assert_eq!(log.events, vec![step(1, 1.0)]);
        assert_eq!(log.truncated_lines, 1);

        let mut writer = EventWriter::open(&path).unwrap();
        assert_eq!(writer.dropped_bytes(), 18);
        writer.append(&step(2, 0.8)).unwrap();
        drop(writer);
        let log = read_events(&path).unwrap();
        assert_eq!(log.events, vec![step(1, 1.0), step(2, 0.8)]);
        assert_eq!(log.truncated_lines, 0);
    }

    #[test]
    fn newer_log_is_refused_by_reader_and_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        std::fs::write(
            &path,
            "{\"kind\":\"header\",\"schema_version\":9,\"written_by\":\"rkif 9\"}\n",
        )
        .unwrap();
        for err in [
            read_events(&path).unwrap_err(),
            EventWriter::open(&path).unwrap_err(),
        ] {
            match err {
                Error::SchemaVersion {
                    path: p,
                    found,
                    supported,
                } => {
                    assert_eq!(p, path);
                    assert_eq!((found, supported), (9, EVENTS_SCHEMA_VERSION));
                }
                other => panic!("expected a schema-version error, got {other:?}"),
            }
        }
    }

    #[test]
    fn missing_header_is_reported() {
        let text =
            "{\"kind\":\"step\",\"task\":0,\"step\":1,\"loss\":1.0,\"lr\":0.1,\"grad_norm\":1.0}\n";
        let err = parse_events(Path::new("e.jsonl"), text.as_bytes()).unwrap_err();
        assert!(
            err.to_string().contains("line 1: expected the log header"),
            "{err}"
        );
    }

    #[test]
    fn non_finite_step_is_refused_but_skipped_step_writes_null() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut writer = EventWriter::open(&path).unwrap();
        let err = writer.append(&step(1, f64::NAN)).unwrap_err();
        assert!(err.to_string().contains("step event field `loss`"), "{err}");
        let skipped = Event::SkippedStep(SkippedStep {
            task: 0,
            step: 1,
            phase: StepPhase::Inner,
            reason: "non-finite loss".into(),
            loss: Some(f64::NAN),
            grad_norm: Some(2.0),
        });
        writer.append(&skipped).unwrap();
        drop(writer);
        let log = read_events(&path).unwrap();
        match &log.events[..] {
            [Event::SkippedStep(s)] => assert_eq!((s.loss, s.grad_norm), (None, Some(2.0))),
            other => panic!("unexpected events {other:?}"),
        }
    }

    #[test]
    fn character_cut_by_a_crash_is_a_truncated_line_but_bad_bytes_inside_are_not() {
        let header = "{\"kind\":\"header\",\"schema_version\":1,\"rkif_version\":\"0.1.0\"}\n";
        let mut bytes = header.as_bytes().to_vec();
        // "é" is two bytes; the crash kept only the first.
        bytes.extend_from_slice(b"{\"kind\":\"skipped_step\",\"reason\":\"caf\xc3");
        let log = parse_events(Path::new("e.jsonl"), &bytes).unwrap();
        assert_eq!(log.truncated_lines, 1);
        bytes.push(b'\n');
        let err = parse_events(Path::new("e.jsonl"), &bytes).unwrap_err();
        assert!(err.to_string().contains("line 2: not UTF-8"), "{err}");
    }

    #[test]
    fn empty_log_reads_as_no_events() {
        let log = parse_events(Path::new("e.jsonl"), b"").unwrap();
        assert_eq!(log.header, None);
        assert!(log.events.is_empty());
    }
}
