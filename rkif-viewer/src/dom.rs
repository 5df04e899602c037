//! Small DOM helpers. Text always goes in through `textContent`, never `innerHTML`: run files
//! are untrusted and a task name like `<img onerror=...>` must show as those characters.

use std::cell::RefCell;

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{Document, Element};

use rkif_core::report::figures::Figure;

/// The page's document.
pub fn document() -> Result<Document, JsValue> {
    web_sys::window()
        .and_then(|w| w.document())
        .ok_or_else(|| JsValue::from_str("no document (not running in a page)"))
}

/// A new `<tag class="class">`.
pub fn element(doc: &Document, tag: &str, class: &str) -> Result<Element, JsValue> {
    let e = doc.create_element(tag)?;
    if !class.is_empty() {
        e.set_class_name(class);
    }
    Ok(e)
}

/// A new `<tag class="class">` holding `text` as text.
pub fn text(doc: &Document, tag: &str, class: &str, text: &str) -> Result<Element, JsValue> {
    let e = element(doc, tag, class)?;
    e.set_text_content(Some(text));
    Ok(e)
}

/// Appends a new `<tag>` with `text` to `parent`; returns it.
pub fn add_text(
    parent: &Element,
    tag: &str,
    class: &str,
    content: &str,
) -> Result<Element, JsValue> {
    let doc = document()?;
    let e = text(&doc, tag, class, content)?;
    parent.append_child(&e)?;
    Ok(e)
}

/// Appends a new empty `<tag id="id">` to `parent`; returns it.
pub fn add_with_id(parent: &Element, tag: &str, id: &str, class: &str) -> Result<Element, JsValue> {
    let doc = document()?;
    let e = element(&doc, tag, class)?;
    e.set_id(id);
    parent.append_child(&e)?;
    Ok(e)
}

/// The element with `id`.
pub fn by_id(id: &str) -> Result<Element, JsValue> {
    document()?
        .get_element_by_id(id)
        .ok_or_else(|| JsValue::from_str(&format!("the page has no #{id}")))
}

/// Removes every child of `e`.
pub fn clear(e: &Element) {
    e.set_text_content(None);
}

/// A table with `header` and text `rows` appended to `parent`; returns it.
pub fn add_table(
    parent: &Element,
    id: &str,
    header: &[&str],
    rows: &[Vec<String>],
) -> Result<Element, JsValue> {
    let table = add_with_id(parent, "table", id, "")?;
    let head = add_with_id(&table, "thead", "", "")?;
    let tr = add_with_id(&head, "tr", "", "")?;
    for h in header {
        add_text(&tr, "th", "", h)?;
    }
    let body = add_with_id(&table, "tbody", "", "")?;
    for row in rows {
        let tr = add_with_id(&body, "tr", "", "")?;
        for cell in row {
            add_text(&tr, "td", "", cell)?;
        }
    }
    Ok(table)
}

/// Calls `handler` on every `event` of `target`. The closure lives as long as the page (the
/// elements it serves are few and replaced only on a reload or a run switch).
pub fn on(target: &Element, event: &str, handler: impl FnMut() + 'static) -> Result<(), JsValue> {
    let mut handler = handler;
    let closure = Closure::<dyn FnMut(web_sys::Event)>::new(move |_: web_sys::Event| handler());
    target.add_event_listener_with_callback(event, closure.as_ref().unchecked_ref())?;
    closure.forget();
    Ok(())
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = Plotly, js_name = newPlot, catch)]
    fn new_plot(
        div: &Element,
        data: &JsValue,
        layout: &JsValue,
        config: &JsValue,
    ) -> Result<JsValue, JsValue>;
}

/// A figure converted for plotly.js, waiting for it to load.
struct Waiting {
    div: Element,
    args: PlotArgs,
}

/// `Plotly.newPlot`'s data, layout and config.
type PlotArgs = (JsValue, JsValue, JsValue);

/// Where plotly.js stands. The page builds its first view while plotly.js still loads
/// (compiling and running it is most of the time to open), so figures asked for before
/// it is there wait in line and are drawn the moment it is.
enum Plotly {
    Loading(Vec<Waiting>),
    Ready,
    Failed,
}

thread_local! {
    static PLOTLY: RefCell<Plotly> = const { RefCell::new(Plotly::Loading(Vec::new())) };
}

/// Draws `figure` into `div` with plotly.js (loaded by the page from its own folder), and
/// marks the moment (`rkif:drawn:<div id>`, see [`mark`]). Before [`plotly_settled`] the
/// figure is converted now and drawn then; after plotly.js failed to load it is an error.
pub fn plot(div: &Element, figure: &Figure) -> Result<(), JsValue> {
    let to_js = |value: &serde_json::Value| -> Result<JsValue, JsValue> {
        let text = serde_json::to_string(value).map_err(|e| JsValue::from_str(&e.to_string()))?;
        js_sys::JSON::parse(&text)
    };
    let data = to_js(&serde_json::Value::Array(figure.data.clone()))?;
    let layout = to_js(&figure.layout)?;
    let config = to_js(&serde_json::json!({ "displaylogo": false, "responsive": true }))?;
    let args = (data, layout, config);
    let args = PLOTLY.with(|state| match &mut *state.borrow_mut() {
        Plotly::Loading(waiting) => {
            waiting.push(Waiting {
                div: div.clone(),
                args,
            });
            Ok(None)
        }
        Plotly::Ready => Ok(Some(args)),
        Plotly::Failed => Err(JsValue::from_str("plotly.js is not loaded")),
    })?;
    match args {
        Some(args) => draw(div, &args),
        None => Ok(()),
    }
}

/// Records that plotly.js has loaded (`loaded`) or failed to, and draws the figures that
/// waited for it, in the order asked, skipping those whose element left the page. Returns
/// the first drawing error (the others are still drawn).
pub fn plotly_settled(loaded: bool) -> Result<(), JsValue> {
    let next = if loaded {
        Plotly::Ready
    } else {
        Plotly::Failed
    };
    let waiting = PLOTLY.with(|state| match state.replace(next) {
        Plotly::Loading(waiting) => waiting,
        Plotly::Ready | Plotly::Failed => Vec::new(),
    });
    if !loaded {
        return Ok(());
    }
    let mut first_error = Ok(());
    for figure in waiting {
        if figure.div.is_connected() {
            let drawn = draw(&figure.div, &figure.args);
            if first_error.is_ok() {
                first_error = drawn;
            }
        }
    }
    first_error
}

fn draw(div: &Element, (data, layout, config): &PlotArgs) -> Result<(), JsValue> {
    new_plot(div, data, layout, config)?;
    mark(&format!("rkif:drawn:{}", div.id()));
    Ok(())
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = performance, js_name = mark, catch)]
    fn performance_mark(name: &str) -> Result<JsValue, JsValue>;
}

/// Records `name` on the page's performance timeline (`performance.mark`), where the
/// benchmark (tests/viewer/bench.mjs) and a browser's profiler read it. Marks are
/// best-effort: a browser without them loses nothing else.
pub fn mark(name: &str) {
    let _ = performance_mark(name);
}
