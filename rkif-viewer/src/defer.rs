//! Work that can wait until the first view is on screen: figures below it, and parsing that
//! only they need. A figure is drawn when its box comes near the viewport or, failing that,
//! when the page is next idle, one job per idle period (so a click never waits for more than
//! one figure). Opening a run then costs only what the reader sees first.
//!
//! An element waiting for its drawing carries `data-pending`; the end-to-end test and the
//! benchmark wait until none is left. Nothing runs before [`begin`], which the page calls
//! once its first view is painted.

use std::cell::RefCell;
use std::collections::VecDeque;

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{Element, IdleRequestOptions, IntersectionObserver, IntersectionObserverEntry};

/// Attribute of an element whose drawing is queued or in flight.
pub const PENDING: &str = "data-pending";

/// How far below the viewport a box counts as near (drawn before it scrolls in).
const NEAR: &str = "0px 0px 300px 0px";

/// An idle callback runs at the latest this long after it was asked for, however busy the
/// page is, so the queue always drains.
const IDLE_TIMEOUT_MS: u32 = 500;

/// One deferred piece of work, drawing into `target` when it has one.
struct Job {
    target: Option<Element>,
    work: Box<dyn FnOnce()>,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Watches the targets of queued jobs; created by [`begin`].
    observer: Option<IntersectionObserver>,
    /// An idle callback is already asked for.
    idle_asked: bool,
}

thread_local! {
    static QUEUE: RefCell<Queue> = RefCell::new(Queue::default());
}

/// Draws into `target` later with `draw` (see the module doc). `draw` runs at most once, and
/// not at all when `target` has left the page by then (the view was replaced).
pub fn draw_later(target: &Element, draw: impl FnOnce() + 'static) -> Result<(), JsValue> {
    target.set_attribute(PENDING, "")?;
    let observer = QUEUE.with(|q| {
        let mut q = q.borrow_mut();
        q.jobs.push_back(Job {
            target: Some(target.clone()),
            work: Box::new(draw),
        });
        q.observer.clone()
    });
    if let Some(observer) = observer {
        observer.observe(target);
        ask_for_idle()?;
    }
    Ok(())
}

/// Runs `work` when the page is idle, after the jobs queued before it.
pub fn when_idle(work: impl FnOnce() + 'static) -> Result<(), JsValue> {
    let started = QUEUE.with(|q| {
        let mut q = q.borrow_mut();
        q.jobs.push_back(Job {
            target: None,
            work: Box::new(work),
        });
        q.observer.is_some()
    });
    if started {
        ask_for_idle()?;
    }
    Ok(())
}

/// Starts running the queue once the current frame is painted: called when the first view
/// is in the page.
pub fn begin() -> Result<(), JsValue> {
    let window = web_sys::window().ok_or("no window")?;
    // A timeout set from an animation frame callback runs after that frame's paint.
    let after_paint = Closure::once_into_js(|| {
        let start = Closure::once_into_js(|| {
            if let Err(e) = watch_queued() {
                web_sys::console::error_2(&"rkif: deferred drawing failed to start".into(), &e);
            }
        });
        if let Some(window) = web_sys::window() {
            let _ = window
                .set_timeout_with_callback_and_timeout_and_arguments_0(start.unchecked_ref(), 0);
        }
    });
    window.request_animation_frame(after_paint.unchecked_ref())?;
    Ok(())
}

/// Creates the observer, watches every queued target and asks for the first idle period.
fn watch_queued() -> Result<(), JsValue> {
    let on_change = Closure::<dyn FnMut(js_sys::Array)>::new(|entries: js_sys::Array| {
        for entry in entries.iter() {
            let Ok(entry) = entry.dyn_into::<IntersectionObserverEntry>() else {
                continue;
            };
            if entry.is_intersecting() {
                run_job_of(&entry.target());
            }
        }
    });
    let options = web_sys::IntersectionObserverInit::new();
    options.set_root_margin(NEAR);
    let observer =
        IntersectionObserver::new_with_options(on_change.as_ref().unchecked_ref(), &options)?;
    // The observer serves the page for its whole life.
    on_change.forget();
    let targets: Vec<Element> = QUEUE.with(|q| {
        let mut q = q.borrow_mut();
        q.observer = Some(observer.clone());
        q.jobs.iter().filter_map(|j| j.target.clone()).collect()
    });
    for target in &targets {
        observer.observe(target);
    }
    ask_for_idle()
}

/// Runs the queued job drawing into `target` now, if there is one.
fn run_job_of(target: &Element) {
    let job = QUEUE.with(|q| {
        let mut q = q.borrow_mut();
        let at = q
            .jobs
            .iter()
            .position(|j| j.target.as_ref() == Some(target))?;
        q.jobs.remove(at)
    });
    if let Some(job) = job {
        run(job);
    }
}

/// Runs the first job whose target is still in the page, dropping those whose view went.
fn run_next() {
    let job = QUEUE.with(|q| {
        let mut q = q.borrow_mut();
        q.idle_asked = false;
        while let Some(job) = q.jobs.pop_front() {
            match &job.target {
                Some(target) if !target.is_connected() => {
                    if let Some(observer) = &q.observer {
                        observer.unobserve(target);
                    }
                }
                _ => return Some(job),
            }
        }
        None
    });
    if let Some(job) = job {
        run(job);
    }
    let more = QUEUE.with(|q| !q.borrow().jobs.is_empty());
    if more {
        if let Err(e) = ask_for_idle() {
            web_sys::console::error_2(&"rkif: cannot schedule deferred drawing".into(), &e);
        }
    }
}

fn run(job: Job) {
    if let Some(target) = &job.target {
        QUEUE.with(|q| {
            if let Some(observer) = &q.borrow().observer {
                observer.unobserve(target);
            }
        });
        // Cleared before drawing: an asynchronous drawing sets it again until it is done.
        let _ = target.remove_attribute(PENDING);
    }
    (job.work)();
}

/// Asks for one idle callback unless one is pending; `setTimeout` where the browser has no
/// `requestIdleCallback`.
fn ask_for_idle() -> Result<(), JsValue> {
    let already = QUEUE.with(|q| std::mem::replace(&mut q.borrow_mut().idle_asked, true));
    if already {
        return Ok(());
    }
    let window = web_sys::window().ok_or("no window")?;
    let callback = Closure::once_into_js(run_next);
    let options = IdleRequestOptions::new();
    options.set_timeout(IDLE_TIMEOUT_MS);
    if window
        .request_idle_callback_with_options(callback.unchecked_ref(), &options)
        .is_err()
    {
        window
            .set_timeout_with_callback_and_timeout_and_arguments_0(callback.unchecked_ref(), 0)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use wasm_bindgen_futures::JsFuture;
    use wasm_bindgen_test::*;

    use super::*;

    wasm_bindgen_test_configure!(run_in_browser);

    async fn sleep(ms: i32) {
        let wait = js_sys::Promise::new(&mut |done, _| {
            if let Some(window) = web_sys::window() {
                let _ = window.set_timeout_with_callback_and_timeout_and_arguments_0(&done, ms);
            }
        });
        let _ = JsFuture::from(wait).await;
    }

    #[wasm_bindgen_test]
    async fn queued_work_waits_for_begin_runs_in_order_and_skips_replaced_views() {
        let doc = crate::dom::document().unwrap();
        let body = doc.body().unwrap();
        let kept = doc.create_element("div").unwrap();
        let replaced = doc.create_element("div").unwrap();
        body.append_child(&kept).unwrap();
        body.append_child(&replaced).unwrap();
        let log: Rc<RefCell<Vec<&str>>> = Rc::default();
        let (a, b, c) = (log.clone(), log.clone(), log.clone());
        draw_later(&kept, move || a.borrow_mut().push("kept")).unwrap();
        draw_later(&replaced, move || b.borrow_mut().push("replaced")).unwrap();
        when_idle(move || c.borrow_mut().push("idle")).unwrap();
        assert!(kept.has_attribute(PENDING));
        replaced.remove();
        sleep(50).await;
        assert!(
            log.borrow().is_empty(),
            "ran before begin: {:?}",
            log.borrow()
        );

        begin().unwrap();
        for _ in 0..100 {
            if log.borrow().len() >= 2 {
                break;
            }
            sleep(50).await;
        }
        sleep(100).await;
        assert_eq!(*log.borrow(), ["kept", "idle"]);
        assert!(!kept.has_attribute(PENDING));
        kept.remove();
    }
}
