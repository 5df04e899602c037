//! The page: run list, problems, and the views of the selected run, plus the comparison of
//! all loaded runs. Figures come from `rkif_core::report::figures`.
//!
//! Opening reads and draws the first view only (summary, metrics, accuracy matrix), its text
//! while plotly.js is still loading; the figures below it, and reading `events.jsonl` for
//! them, wait in [`crate::defer`].

use std::cell::{Cell, Ref, RefCell};
use std::rc::Rc;

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{Element, HtmlInputElement, HtmlSelectElement};

use rkif_core::report::figures::{
    accuracy_heatmap, comparison_heatmaps, element_map, forgetting_bars, fusion_shares,
    importance_layers, metric_cells, metrics_table, percent, run_summary, training_curves, Figure,
};
use rkif_core::report::{parse_artifact, EventLog, ImportanceSnapshot, MetricsFile};

use crate::defer::{draw_later, when_idle, PENDING};
use crate::dom::{add_table, add_text, add_with_id, by_id, clear, mark, on, plot, plotly_settled};
use crate::load::{
    describe, file_bytes, load_dropped, load_site_runs, load_url_run, now_ms, LoadedRun,
};
use crate::run::{RunData, SnapshotRef};

/// The loaded runs and which one is shown.
#[derive(Default)]
pub struct State {
    runs: Vec<Rc<LoadedRun>>,
    selected: usize,
}

type Shared = Rc<RefCell<State>>;

/// Starts the page: wires the drop zone, loads the report folder's runs and `?run=`, builds
/// the first view, and draws its figures once `plotly` (the promise of plotly.js having
/// loaded) settles. What is on the critical path to the first view is plotly.js (download,
/// compile, run, draw: tests/viewer/bench.mjs); the runs' files load meanwhile.
pub async fn start(plotly: js_sys::Promise) -> Result<(), JsValue> {
    mark("rkif:start");
    let began = now_ms();
    let state: Shared = Rc::new(RefCell::new(State::default()));
    wire_dropping(&state)?;
    let mut notes = Vec::new();
    match load_site_runs().await {
        Ok(runs) => state
            .borrow_mut()
            .runs
            .extend(runs.into_iter().map(Rc::new)),
        Err(why) => notes.push(why),
    }
    let search = web_sys::window().ok_or("no window")?.location().search()?;
    let params = web_sys::UrlSearchParams::new_with_str(&search)?;
    if let Some(url) = params.get("run") {
        let run = load_url_run(&url).await;
        let mut s = state.borrow_mut();
        s.runs.push(Rc::new(run));
        s.selected = s.runs.len() - 1;
    }
    if state.borrow().runs.is_empty() {
        notes.push("No runs yet: drop run files or a zip of a run folder on this page.".into());
    }
    mark("rkif:runs-loaded");
    // The first view's text goes in while plotly.js still loads; its figures wait for it.
    render(&state)?;
    mark("rkif:view-built");
    let loaded = match wasm_bindgen_futures::JsFuture::from(plotly).await {
        Ok(_) => true,
        Err(e) => {
            notes.push(format!("No figures: {}.", describe(&e)));
            false
        }
    };
    mark("rkif:plotly-ready");
    report(plotly_settled(loaded));
    read_other_runs_events(&state)?;
    let status = by_id("status")?;
    status.set_text_content(Some(&format!(
        "{} run(s) loaded in {:.0} ms. {}",
        state.borrow().runs.len(),
        now_ms() - began,
        notes.join(" ")
    )));
    status.set_attribute("data-ready", "true")?;
    mark("rkif:first-view");
    crate::defer::begin()
}

/// Reads the events of the runs not shown, when the page is idle, so that a bad
/// `events.jsonl` is listed among the problems without selecting its run.
fn read_other_runs_events(state: &Shared) -> Result<(), JsValue> {
    let (runs, selected) = {
        let s = state.borrow();
        (s.runs.clone(), s.selected)
    };
    for (index, run) in runs.into_iter().enumerate() {
        if index != selected {
            when_idle(move || {
                wasm_bindgen_futures::spawn_local(async move { read_events(&run).await });
            })?;
        }
    }
    Ok(())
}

/// Reads `run`'s events if not done yet, and lists the problems that found.
async fn read_events(run: &LoadedRun) {
    let found = run.read_events().await;
    if found.is_empty() {
        return;
    }
    report(by_id("problems").and_then(|list| {
        found
            .iter()
            .try_for_each(|problem| add_text(&list, "li", "problem", problem).map(|_| ()))
    }));
}

/// The drop zone and the file input both load their files as one new run.
fn wire_dropping(state: &Shared) -> Result<(), JsValue> {
    let input: HtmlInputElement = by_id("file-input")?.dyn_into()?;
    let picked = input.clone();
    let s = state.clone();
    on(&input, "change", move || {
        if let Some(list) = picked.files() {
            let files: Vec<web_sys::File> =
                (0..list.length()).filter_map(|i| list.get(i)).collect();
            add_files(s.clone(), files);
        }
    })?;
    let body = by_id("drop-zone")?;
    let s = state.clone();
    let closure =
        Closure::<dyn FnMut(web_sys::DragEvent)>::new(move |event: web_sys::DragEvent| {
            event.prevent_default();
            if event.type_() != "drop" {
                return;
            }
            if let Some(list) = event.data_transfer().and_then(|d| d.files()) {
                let files: Vec<web_sys::File> =
                    (0..list.length()).filter_map(|i| list.get(i)).collect();
                add_files(s.clone(), files);
            }
        });
    for kind in ["dragover", "drop"] {
        body.add_event_listener_with_callback(kind, closure.as_ref().unchecked_ref())?;
    }
    // Lives as long as the page.
    closure.forget();
    Ok(())
}

fn add_files(state: Shared, files: Vec<web_sys::File>) {
    wasm_bindgen_futures::spawn_local(async move {
        let mut contents = Vec::new();
        let mut unreadable = Vec::new();
        for file in files {
            match file_bytes(&file).await {
                Ok(bytes) => contents.push((file.name(), bytes)),
                Err(why) => unreadable.push(why),
            }
        }
        let run = load_dropped(contents);
        run.data.borrow_mut().problems.extend(unreadable);
        {
            let mut s = state.borrow_mut();
            s.runs.push(Rc::new(run));
            s.selected = s.runs.len() - 1;
        }
        report(render(&state));
    });
}

/// Shows an error of the page itself (not of a run file) in the problems list.
fn report(result: Result<(), JsValue>) {
    if let Err(e) = result {
        if let Ok(list) = by_id("problems") {
            let _ = add_text(
                &list,
                "li",
                "page-error",
                &format!("viewer error: {}", describe(&e)),
            );
        }
    }
}

/// Redraws everything for the current state.
fn render(state: &Shared) -> Result<(), JsValue> {
    let (runs, selected) = {
        let s = state.borrow();
        (s.runs.clone(), s.selected)
    };
    render_problems(&runs)?;
    let list = by_id("runs")?;
    clear(&list);
    for (index, run) in runs.iter().enumerate() {
        let item = add_with_id(&list, "li", "", "")?;
        let class = if index == selected {
            "run selected"
        } else {
            "run"
        };
        let button = add_text(&item, "button", class, &run.data.borrow().label())?;
        button.set_attribute("data-index", &index.to_string())?;
        let s = state.clone();
        on(&button, "click", move || {
            s.borrow_mut().selected = index;
            report(render(&s));
        })?;
    }
    let view = by_id("run-view")?;
    clear(&view);
    if let Some(run) = runs.get(selected) {
        render_run(&view, run)?;
    }
    render_comparison(&runs)
}

/// The problems of every run, one item each (each names its file).
fn render_problems(runs: &[Rc<LoadedRun>]) -> Result<(), JsValue> {
    let problems = by_id("problems")?;
    clear(&problems);
    for run in runs {
        for problem in &run.data.borrow().problems {
            add_text(&problems, "li", "problem", problem)?;
        }
    }
    Ok(())
}

/// A section with a heading, appended to `parent`.
fn section(parent: &Element, id: &str, title: &str) -> Result<Element, JsValue> {
    let s = add_with_id(parent, "section", id, "view")?;
    add_text(&s, "h2", "", title)?;
    Ok(s)
}

fn unavailable(parent: &Element, what: &str) -> Result<(), JsValue> {
    add_text(parent, "p", "unavailable", what).map(|_| ())
}

/// The views of one run: summary, metrics and matrix now; the rest through [`draw_later`].
fn render_run(view: &Element, run: &Rc<LoadedRun>) -> Result<(), JsValue> {
    let data = run.data.borrow();
    let summary = section(view, "view-summary", "Run summary")?;
    match &data.manifest {
        Some(manifest) => {
            let rows: Vec<Vec<String>> = run_summary(manifest)
                .into_iter()
                .map(|(label, value)| vec![label.to_owned(), value])
                .collect();
            add_table(&summary, "summary-table", &["field", "value"], &rows)?;
        }
        None => unavailable(
            &summary,
            "No summary: manifest.json could not be read (see above).",
        )?,
    }
    let matrix = section(view, "view-matrix", "Accuracy matrix")?;
    match &data.metrics {
        Some(metrics) => {
            let rows: Vec<Vec<String>> = metric_cells(metrics)
                .into_iter()
                .map(|m| {
                    let cells = m.cells.iter().map(ToString::to_string).collect::<Vec<_>>();
                    vec![
                        m.name.to_owned(),
                        percent(m.value),
                        m.formula,
                        format!("{}/{}", m.terms_used, m.terms_total),
                        cells.join(" "),
                    ]
                })
                .collect();
            let table = add_table(
                &summary,
                "metric-table",
                &["metric", "value (%)", "formula", "terms used", "cells"],
                &rows,
            )?;
            table.set_attribute("data-tasks-trained", &metrics.tasks_trained.to_string())?;
            add_text(&summary, "p", "note", &metrics.notation)?;
            add_text(&summary, "p", "note", &metrics.accuracy_definition)?;
            for caveat in &metrics.caveats {
                add_text(&summary, "p", "caveat", &format!("Caveat: {caveat}"))?;
            }
            let heatmap = add_with_id(&matrix, "div", "matrix-plot", "plot")?;
            report(plot(&heatmap, &accuracy_heatmap(metrics)));
            let bars = add_with_id(&matrix, "div", "forgetting-plot", "plot small")?;
            let (target, run) = (bars.clone(), run.clone());
            draw_later(&bars, move || {
                if let Some(metrics) = &run.data.borrow().metrics {
                    report(plot(&target, &forgetting_bars(metrics)));
                }
            })?;
        }
        None => unavailable(
            &matrix,
            "No matrix: metrics.json could not be read (see above).",
        )?,
    }
    drop(data);
    let importance = section(view, "view-importance", "Importance maps")?;
    render_importance(&importance, run)?;
    let fusion = section(view, "view-fusion", "Fusion over rounds")?;
    let curves = section(view, "view-curves", "Training curves")?;
    let event_views: [(Element, &str, &str, EventFigure); 2] = [
        (fusion, "fusion-plot", "rounds", fusion_shares),
        (curves, "curves-plot", "curves", training_curves),
    ];
    for (parent, id, what, figure) in event_views {
        let div = add_with_id(&parent, "div", id, "plot")?;
        let (target, run) = (div.clone(), run.clone());
        draw_later(&div, move || {
            // Pending again until the events are in (they may have to be fetched).
            let _ = target.set_attribute(PENDING, "");
            wasm_bindgen_futures::spawn_local(async move {
                read_events(&run).await;
                // Both event figures may be waiting for the same answer: each draws in an
                // idle period of its own.
                report(when_idle(move || {
                    // Not for a view replaced meanwhile (another run picked).
                    if !target.is_connected() {
                        return;
                    }
                    let drawn = match &run.data.borrow().events {
                        Some(events) => plot(&target, &figure(events)),
                        None => {
                            target.set_class_name("");
                            unavailable(
                                &target,
                                &format!("No {what}: events.jsonl could not be read (see above)."),
                            )
                        }
                    };
                    report(drawn);
                    let _ = target.remove_attribute(PENDING);
                }));
            });
        })?;
    }
    Ok(())
}

/// A figure drawn from a run's event log.
type EventFigure = fn(&EventLog) -> Figure;

/// Task picker and a slider over that task's snapshots; the snapshot loads when chosen (the
/// first one when its plot comes into view).
fn render_importance(parent: &Element, run: &Rc<LoadedRun>) -> Result<(), JsValue> {
    let tasks = run.data.borrow().snapshot_tasks();
    let Some(&first_task) = tasks.first() else {
        return unavailable(parent, "No importance snapshots in this run.");
    };
    let controls = add_with_id(parent, "div", "importance-controls", "controls")?;
    add_text(&controls, "label", "", "task ")?;
    let select: HtmlSelectElement =
        add_with_id(&controls, "select", "importance-task", "")?.dyn_into()?;
    let names = run
        .data
        .borrow()
        .metrics
        .as_ref()
        .map(|m| m.tasks.clone())
        .unwrap_or_default();
    for task in &tasks {
        let name = names.get(*task).map(String::as_str).unwrap_or("");
        let option = add_text(&select, "option", "", &format!("{task} {name}"))?;
        option.set_attribute("value", &task.to_string())?;
    }
    add_text(&controls, "label", "", " round ")?;
    let slider: HtmlInputElement =
        add_with_id(&controls, "input", "importance-round", "")?.dyn_into()?;
    slider.set_type("range");
    slider.set_min("0");
    let label = add_with_id(&controls, "span", "importance-round-label", "")?;
    let layers = add_with_id(parent, "div", "importance-plot", "plot")?;
    let maps = add_with_id(parent, "div", "map-controls", "controls")?;
    let map_plot = add_with_id(parent, "div", "map-plot", "plot")?;

    let shown: Rc<RefCell<Option<ImportanceSnapshot>>> = Rc::new(RefCell::new(None));
    // Numbers the snapshot requests: only the latest one draws (answers can overtake).
    let latest = Rc::new(Cell::new(0u64));
    let current = {
        let (run, select, slider) = (run.clone(), select.clone(), slider.clone());
        move || -> Option<SnapshotRef> {
            let task: usize = select.value().parse().ok()?;
            let index: usize = slider.value().parse().ok()?;
            run.data
                .borrow()
                .snapshots_of(task)
                .get(index)
                .map(|s| (*s).clone())
        }
    };
    let show = {
        let (run, label, layers, maps, map_plot, shown, latest) = (
            run.clone(),
            label.clone(),
            layers.clone(),
            maps.clone(),
            map_plot.clone(),
            shown.clone(),
            latest.clone(),
        );
        let current = current.clone();
        move || {
            let Some(snapshot_ref) = current() else {
                return;
            };
            let place = match snapshot_ref.round {
                Some(r) => format!("round {r}"),
                None => "end of task".to_owned(),
            };
            label.set_text_content(Some(&place));
            let request = latest.get() + 1;
            latest.set(request);
            let _ = layers.set_attribute(PENDING, "");
            let (run, layers, maps, map_plot, shown, latest) = (
                run.clone(),
                layers.clone(),
                maps.clone(),
                map_plot.clone(),
                shown.clone(),
                latest.clone(),
            );
            let name = format!("{}/{}", run.data.borrow().origin, snapshot_ref.path);
            wasm_bindgen_futures::spawn_local(async move {
                let answer = run.source.read(&snapshot_ref.path).await;
                if latest.get() != request {
                    return;
                }
                let parsed = match answer {
                    Ok(bytes) => {
                        parse_artifact::<ImportanceSnapshot>(std::path::Path::new(&name), &bytes)
                            .map_err(|e| e.to_string())
                    }
                    Err(why) => Err(format!("{name}: cannot read ({why})")),
                };
                clear(&layers);
                clear(&maps);
                clear(&map_plot);
                match parsed {
                    Ok(snapshot) => {
                        report(plot(&layers, &importance_layers(&snapshot)));
                        report(map_picker(&maps, &map_plot, &snapshot, &shown));
                        layers
                            .set_attribute("data-step", &snapshot.step.to_string())
                            .ok();
                        *shown.borrow_mut() = Some(snapshot);
                    }
                    Err(why) => report(unavailable(&layers, &why)),
                }
                let _ = layers.remove_attribute(PENDING);
            });
        }
    };
    let reset_slider = {
        let (run, select, slider) = (run.clone(), select.clone(), slider.clone());
        move || {
            let task: usize = select.value().parse().unwrap_or(first_task);
            let count = run.data.borrow().snapshots_of(task).len();
            slider.set_max(&count.saturating_sub(1).to_string());
            slider.set_value("0");
        }
    };
    reset_slider();
    let on_task_show = show.clone();
    let on_task_reset = reset_slider.clone();
    on(&select, "change", move || {
        on_task_reset();
        on_task_show();
    })?;
    let on_round = show.clone();
    on(&slider, "input", on_round)?;
    draw_later(&layers, show)
}

/// The element maps a snapshot holds, drawn on demand.
fn map_picker(
    parent: &Element,
    target: &Element,
    snapshot: &ImportanceSnapshot,
    shown: &Rc<RefCell<Option<ImportanceSnapshot>>>,
) -> Result<(), JsValue> {
    if snapshot.maps.is_empty() {
        return unavailable(parent, "This snapshot has no element maps.");
    }
    add_text(parent, "label", "", "element map ")?;
    let select: HtmlSelectElement = add_with_id(parent, "select", "map-select", "")?.dyn_into()?;
    for (index, map) in snapshot.maps.iter().enumerate() {
        let text = format!("{} {:?} {:?}", map.module, map.factor, map.score);
        add_text(&select, "option", "", &text)?.set_attribute("value", &index.to_string())?;
    }
    let button = add_text(parent, "button", "", "Show element map")?;
    button.set_id("map-button");
    let (target, shown) = (target.clone(), shown.clone());
    on(&button, "click", move || {
        let index: usize = select.value().parse().unwrap_or(0);
        if let Some(map) = shown.borrow().as_ref().and_then(|s| s.maps.get(index)) {
            clear(&target);
            report(plot(&target, &element_map(map)));
        }
    })
}

/// Side-by-side matrices (drawn later) and a metrics table of every run with metrics.
fn render_comparison(runs: &[Rc<LoadedRun>]) -> Result<(), JsValue> {
    let view = by_id("compare-view")?;
    clear(&view);
    let with_metrics: Vec<Rc<LoadedRun>> = runs
        .iter()
        .filter(|r| r.data.borrow().metrics.is_some())
        .cloned()
        .collect();
    if with_metrics.len() < 2 {
        return Ok(());
    }
    let compare = section(&view, "view-compare", "Comparison")?;
    let data: Vec<Ref<RunData>> = with_metrics.iter().map(|r| r.data.borrow()).collect();
    let rows: Vec<(String, String, &MetricsFile)> = data
        .iter()
        .filter_map(|d| {
            let method = d.manifest.as_ref().map(|m| m.method.clone());
            let metrics = d.metrics.as_ref()?;
            Some((d.label(), method.unwrap_or_default(), metrics))
        })
        .collect();
    let table_rows: Vec<Vec<String>> = metrics_table(
        &rows
            .iter()
            .map(|(n, m, f)| (n.as_str(), m.as_str(), *f))
            .collect::<Vec<_>>(),
    )
    .into_iter()
    .map(|row| row.to_vec())
    .collect();
    add_table(
        &compare,
        "compare-table",
        &["run", "method", "OP (%)", "BWT (%)", "FWT (%)", "F (%)"],
        &table_rows,
    )?;
    drop(rows);
    drop(data);
    let div = add_with_id(&compare, "div", "compare-plot", "plot")?;
    let target = div.clone();
    draw_later(&div, move || {
        let data: Vec<Ref<RunData>> = with_metrics.iter().map(|r| r.data.borrow()).collect();
        let labels: Vec<String> = data.iter().map(|d| d.label()).collect();
        let pairs: Vec<(&str, &MetricsFile)> = data
            .iter()
            .zip(&labels)
            .filter_map(|(d, label)| Some((label.as_str(), d.metrics.as_ref()?)))
            .collect();
        report(plot(&target, &comparison_heatmaps(&pairs)));
    })
}
