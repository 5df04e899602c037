//! Where runs come from: the report folder's `runs/index.json`, a `?run=<url>`, or files and
//! zips dropped on the page. Only the URLs asked for are fetched.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use js_sys::{Promise, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::{future_to_promise, JsFuture};
use web_sys::Response;

use rkif_core::report::run_dir::{EVENTS_FILE, IMPORTANCE_DIR, MANIFEST_FILE, METRICS_FILE};

use crate::run::{Fetched, RunData};
use crate::zip::{read_zip, strip_common_folder};

/// Where a run's files are read from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Over HTTP, relative to this folder URL (no trailing slash).
    Http(String),
    /// Already in memory (dropped files), by path relative to the run folder.
    Memory(BTreeMap<String, Vec<u8>>),
}

impl Source {
    /// The bytes of `path` (relative to the run folder).
    pub async fn read(&self, path: &str) -> Fetched {
        match self {
            Source::Http(base) => fetch_bytes(&format!("{base}/{path}")).await,
            Source::Memory(files) => files
                .get(path)
                .cloned()
                .ok_or_else(|| "not among the dropped files".to_owned()),
        }
    }
}

/// A run and where to read more of it. Opening a run reads its manifest and metrics only:
/// importance snapshots load when shown, and `events.jsonl` (the largest file of a long run,
/// needed only by views below the first) when first needed ([`LoadedRun::read_events`]).
#[derive(Debug)]
pub struct LoadedRun {
    /// Its parsed artifacts and problems (events and their problems once read).
    pub data: RefCell<RunData>,
    /// Where its files are.
    pub source: Rc<Source>,
    /// Where reading `events.jsonl` stands.
    events: RefCell<EventsRead>,
}

/// Where reading a run's `events.jsonl` stands.
#[derive(Debug)]
enum EventsRead {
    /// Listed (or not known to be absent) and not requested yet.
    Waiting,
    /// Requested: settles to its bytes (a `Uint8Array`) or why it could not be read (text).
    Requested(Promise),
    /// Parsed into the run's data, or absent or bad (and then among its problems).
    Done,
}

impl LoadedRun {
    /// Parses the run's files; `events.jsonl` waits for [`LoadedRun::read_events`]. In
    /// `files`, its entry says whether it is there (its bytes are not looked at).
    fn new(origin: &str, files: &BTreeMap<String, Fetched>, source: Source) -> Self {
        let events = match files.get(EVENTS_FILE) {
            Some(Ok(_)) => EventsRead::Waiting,
            _ => EventsRead::Done,
        };
        LoadedRun {
            data: RefCell::new(RunData::parse_deferring_events(origin, files)),
            source: Rc::new(source),
            events: RefCell::new(events),
        }
    }

    /// Reads `events.jsonl` unless that was done already: fetches it (once, however many
    /// views ask at the same time) and parses it. Returns the problems this found (an
    /// unreadable or bad log), which the page then lists.
    pub async fn read_events(&self) -> Vec<String> {
        let request = {
            let mut events = self.events.borrow_mut();
            match &*events {
                EventsRead::Done => return Vec::new(),
                EventsRead::Requested(request) => request.clone(),
                EventsRead::Waiting => {
                    let source = self.source.clone();
                    let request = future_to_promise(async move {
                        match source.read(EVENTS_FILE).await {
                            Ok(bytes) => Ok(Uint8Array::from(bytes.as_slice()).into()),
                            Err(why) => Err(JsValue::from_str(&why)),
                        }
                    });
                    *events = EventsRead::Requested(request.clone());
                    request
                }
            }
        };
        let answer = JsFuture::from(request).await;
        // Of the callers awaiting the same request, the first to get here parses.
        if matches!(
            std::mem::replace(&mut *self.events.borrow_mut(), EventsRead::Done),
            EventsRead::Done
        ) {
            return Vec::new();
        }
        let mut data = self.data.borrow_mut();
        let before = data.problems.len();
        match answer {
            Ok(bytes) => data.read_events(&Uint8Array::new(&bytes).to_vec()),
            Err(why) => {
                let problem = format!(
                    "{}/{EVENTS_FILE}: cannot read ({})",
                    data.origin,
                    describe(&why)
                );
                data.problems.push(problem);
            }
        }
        data.problems.get(before..).unwrap_or_default().to_vec()
    }
}

/// Starts a GET of `url`: the request goes out now, [`receive`] awaits its answer.
fn send(url: &str) -> Result<JsFuture, String> {
    let window = web_sys::window().ok_or("no window")?;
    Ok(JsFuture::from(window.fetch_with_str(url)))
}

/// The body of a request [`send`] started; a failed request or a non-2xx status is an
/// error saying which.
async fn receive(request: Result<JsFuture, String>) -> Fetched {
    let response = request?
        .await
        .map_err(|e| format!("request failed: {}", describe(&e)))?;
    let response: Response = response
        .dyn_into()
        .map_err(|_| "not an HTTP response".to_owned())?;
    if !response.ok() {
        return Err(format!("HTTP {}", response.status()));
    }
    let buffer = response.array_buffer().map_err(|e| describe(&e))?;
    let buffer = JsFuture::from(buffer).await.map_err(|e| describe(&e))?;
    Ok(Uint8Array::new(&buffer).to_vec())
}

/// GETs `url`; a failed request or a non-2xx status is an error saying which.
pub async fn fetch_bytes(url: &str) -> Fetched {
    receive(send(url)).await
}

/// A JS error as text.
pub fn describe(value: &JsValue) -> String {
    value
        .as_string()
        .or_else(|| {
            value
                .dyn_ref::<js_sys::Error>()
                .map(|e| String::from(e.message()))
        })
        .unwrap_or_else(|| format!("{value:?}"))
}

/// A run's main artifacts being fetched over HTTP (all requests already sent).
struct RunRequest {
    origin: String,
    base: String,
    requests: Vec<(&'static str, Result<JsFuture, String>)>,
    /// `events.jsonl` is listed (or there is no listing).
    events: bool,
    snapshots: Vec<String>,
}

impl RunRequest {
    /// Sends the requests for the main artifacts of the run at `base`; `files` lists its
    /// files when known (from the site index or `files.json`), which also names its
    /// importance snapshots. Files the listing lacks are not requested.
    fn send(origin: &str, base: &str, files: Option<Vec<String>>) -> Self {
        let listed = |name: &str| files.as_ref().is_none_or(|l| l.iter().any(|f| f == name));
        let requests = [MANIFEST_FILE, METRICS_FILE]
            .into_iter()
            .filter(|name| listed(name))
            .map(|name| (name, send(&format!("{base}/{name}"))))
            .collect();
        // Events: requested when first needed (see `LoadedRun`).
        let events = listed(EVENTS_FILE);
        // Snapshots: listed only; their bytes are fetched when shown.
        let prefix = format!("{IMPORTANCE_DIR}/");
        let snapshots = files
            .unwrap_or_default()
            .into_iter()
            .filter(|path| path.starts_with(&prefix))
            .collect();
        RunRequest {
            origin: origin.to_owned(),
            base: base.to_owned(),
            requests,
            events,
            snapshots,
        }
    }

    /// Awaits the answers and parses them.
    async fn receive(self) -> LoadedRun {
        let mut fetched: BTreeMap<String, Fetched> = BTreeMap::new();
        for (name, request) in self.requests {
            fetched.insert(name.to_owned(), receive(request).await);
        }
        // Files there but not fetched yet: listed with no bytes.
        let unfetched = self.events.then(|| EVENTS_FILE.to_owned());
        for path in self.snapshots.into_iter().chain(unfetched) {
            fetched.insert(path, Ok(Vec::new()));
        }
        LoadedRun::new(&self.origin, &fetched, Source::Http(self.base))
    }
}

/// The runs listed in the report folder's `runs/index.json`. `Err` when there is no index
/// (a page opened without a report) or it cannot be read.
pub async fn load_site_runs() -> Result<Vec<LoadedRun>, String> {
    let bytes = fetch_bytes("runs/index.json")
        .await
        .map_err(|e| format!("runs/index.json: {e}"))?;
    let index: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("runs/index.json: not valid JSON: {e}"))?;
    let runs = index
        .get("runs")
        .and_then(|r| r.as_array())
        .ok_or("runs/index.json: no `runs` list")?;
    // Every run's requests go out before any answer is awaited.
    let mut requests = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let path = run
            .get("path")
            .and_then(|p| p.as_str())
            .ok_or_else(|| format!("runs/index.json: runs[{i}] has no `path`"))?;
        let files = run.get("files").and_then(|f| f.as_array()).map(|list| {
            list.iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect()
        });
        requests.push(RunRequest::send(path, path, files));
    }
    let mut loaded = Vec::new();
    for request in requests {
        loaded.push(request.receive().await);
    }
    Ok(loaded)
}

/// A run at `url` (`?run=<url>`): its `files.json` names its snapshots when present.
pub async fn load_url_run(url: &str) -> LoadedRun {
    let base = url.trim_end_matches('/');
    let files = match fetch_bytes(&format!("{base}/files.json")).await {
        Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| {
                v.get("files").and_then(|f| f.as_array()).map(|list| {
                    list.iter()
                        .filter_map(|f| f.as_str().map(str::to_owned))
                        .collect()
                })
            }),
        Err(_) => None,
    };
    RunRequest::send(base, base, files).receive().await
}

/// A run from dropped files: zips are unpacked (their common top folder removed), loose
/// snapshot files (`task-000-end.json`) go under `importance/`. A zip that cannot be read is
/// reported by name and the other files still load.
pub fn load_dropped(files: Vec<(String, Vec<u8>)>) -> LoadedRun {
    let mut contents: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut problems = Vec::new();
    for (name, bytes) in files {
        if name.to_ascii_lowercase().ends_with(".zip") {
            match read_zip(&name, &bytes) {
                Ok(entries) => contents.extend(strip_common_folder(entries)),
                Err(why) => problems.push(why),
            }
        } else if name.starts_with("task-") {
            contents.insert(format!("{IMPORTANCE_DIR}/{name}"), bytes);
        } else {
            contents.insert(name, bytes);
        }
    }
    let fetched: BTreeMap<String, Fetched> = contents
        .iter()
        .map(|(k, v)| (k.clone(), Ok(v.clone())))
        .collect();
    let run = LoadedRun::new("dropped files", &fetched, Source::Memory(contents));
    {
        let mut data = run.data.borrow_mut();
        problems.append(&mut data.problems);
        data.problems = problems;
    }
    run
}

/// Reads a dropped file's bytes.
pub async fn file_bytes(file: &web_sys::File) -> Result<Vec<u8>, String> {
    let buffer = JsFuture::from(file.array_buffer())
        .await
        .map_err(|e| format!("{}: cannot read ({})", file.name(), describe(&e)))?;
    Ok(Uint8Array::new(&buffer).to_vec())
}

#[wasm_bindgen]
extern "C" {
    /// `performance.now()`, for the load time the page reports.
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    pub fn now_ms() -> f64;
}
