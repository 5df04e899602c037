// Opens report sites in headless Chromium several times and prints how long they take to open.
// usage: node bench.mjs <site folder> [<site folder> ...] [loads (default 7)] [--details]
//          [--same-thread-server]
// With several sites the loads alternate between them (a, b, a, b, ...), so that each sees the
// same machine load: a before/after comparison in one session. --details describes every load,
// not only the first of each site.
//
// "Opens" (target <= 1 s): from the start of the navigation until the first view is painted:
// the status line says ready, the run summary and the metric table are in the page and the
// accuracy matrix is drawn (plotly's SVG, with its hover). The figures below the first view
// (forgetting, importance, fusion, training curves, comparison) are drawn after that, one
// per idle period or as they scroll near; "all views" is until none is pending and the
// training curves are drawn. "Longest task after open" is the longest the page's main thread
// was busy after the first view (a click waits at most that long), from Chromium's long
// task timing.
//
// Timed by the page's own clock, from a script Playwright installs before the page's own
// scripts: it checks the first view at each animation frame and records the time after that
// frame is painted. Until 2026-11-30 this script timed the wait of Playwright's selector
// polling instead, and counted the training curves in the first view. That was wrong on two
// counts: polling round trips queue behind the page's later drawing (they time the driver,
// not the page), and the curves are three screens down, not what a reader sees on opening.
//
// Each load uses a fresh browser context (empty cache). For the first load of each site it
// prints the performance marks of main.js and the viewer (`rkif:*`, ms since navigation),
// every request (start-end) and the main thread's long tasks before the first view
// (start+duration); trace.mjs gives a full trace of one load.
//
// The static server runs in a worker thread (serve.mjs). Until 2026-11-30 it ran in this
// script's own thread, where it answered only when Playwright's handling of the browser's
// events let it: answers to the page's first requests took 50-370 ms, time that
// belonged to the harness, not the page. --same-thread-server measures the old way.
//
// Where the time goes (trace.mjs and the marks, 2026-11-30): the critical path to the first
// view is plotly.js alone: its download, its compilation (on a background thread, by the
// compile hint), running it, and drawing the matrix. The wasm starts ~200-300 ms after
// navigation and has the run's first-view files (index, manifest, metrics: 22 kB; the 21.5 MB
// of events and snapshots are not fetched before the first view) well before plotly.js is
// ready. With the in-thread server the runs seemed to load late (runs-loaded = plotly-ready)
// because the answers' handling waited for plotly.js to finish running on the main thread.
// Running the official cartesian bundle took 220-300 ms of the main thread (the long task
// that ends with the first view: 290-590 ms); the partial bundle (rkif-viewer/plotly/entry.js)
// runs in 20-30 ms (that long task: 160-220 ms). What is left is compiling it (150-350 ms,
// off the main thread) and drawing the matrix (110-200 ms).
//
// Measured on the project's shared 2-core machine (load average in brackets; medians of 7
// loads; both viewers in each session, loads alternating):
//   2026-11-30 23:23-23:26, partial plotly.js bundle, first view's text built while plotly.js
//     loads: open 680, 648, 627 ms, against 918, 830, 837 ms for the viewer before [4.9-5.6];
//     with --same-thread-server 593 and 552 ms against 894 and 766 ms [5.6-6.6]. All views
//     1.2-1.3 s (before: 1.4-1.5 s); longest task after open 121-146 ms. Wasm 773,470 bytes,
//     plotly.min.js 1,099,226 bytes (1,333,730 before).
//   2026-11-30 22:48 (the viewer before, in-thread server, load 1-2): 983 ms.
//   2026-11-30 ~20:30 (in-thread server; the first view drawn first, the rest deferred, the
//     cartesian plotly.js bundle async with the compile hint): open 1034, 961, 1061 ms
//     [8.5-9.1], 927 ms [6.3-7.2]; all views 1.4-1.9 s; longest task after open 120-240 ms.
//     The viewer before that (everything drawn at open, plotly.js run before the viewer):
//     1.49 s [7.5-8], 1.40-1.82 s [8.8-9.7].
import { loadavg } from 'node:os';
import { Worker } from 'node:worker_threads';
import { chromium } from 'playwright-core';
import { serve } from './serve.mjs';

const args = process.argv.slice(2);
const flag = (name) => { const at = args.indexOf(name); return at >= 0 && args.splice(at, 1).length > 0; };
const sameThreadServer = flag('--same-thread-server');
const details = flag('--details');
const roots = args.filter((a) => !/^\d+$/.test(a));
const loads = Number(args.find((a) => /^\d+$/.test(a)) || 7);
if (roots.length === 0) {
  console.error('usage: node bench.mjs <site folder> [<site folder> ...] [loads] [--details] [--same-thread-server]');
  process.exit(2);
}

const ports = sameThreadServer
  ? await Promise.all(roots.map(serve))
  : await new Promise((ok, no) => {
    const worker = new Worker(new URL('./serve.mjs', import.meta.url), { workerData: { roots } });
    // The servers live as long as this script: it exits when it is done.
    worker.once('message', ok);
    worker.once('error', no);
  });
const urls = ports.map((port) => `http://127.0.0.1:${port}/`);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
// Runs in the page before its scripts; sets window.__bench = { open, all, longestAfterOpen,
// tasksBeforeOpen: [[start, duration] of each long task before open] }.
function watch() {
  const bench = { open: null, all: null, longestAfterOpen: 0, tasksBeforeOpen: [] };
  window.__bench = bench;
  const tasks = [];
  new PerformanceObserver((list) => tasks.push(...list.getEntries()))
    .observe({ type: 'longtask', buffered: true });
  const $ = (selector) => document.querySelector(selector);
  const firstView = () => $('#status[data-ready="true"]') && $('#summary-table') && $('#metric-table')
    && $('#matrix-plot .main-svg');
  const allViews = () => firstView() && $('#curves-plot .main-svg') && !$('[data-pending]');
  const frame = () => requestAnimationFrame(() => {
    const [open, all] = [firstView(), allViews()];
    // A timeout set in an animation frame runs after that frame is painted.
    setTimeout(() => {
      const now = performance.now();
      if (open && bench.open === null) {
        bench.open = now;
        bench.tasksBeforeOpen = tasks.filter((t) => t.startTime < now)
          .map((t) => [Math.round(t.startTime), Math.round(t.duration)]);
      }
      if (all) {
        bench.all = now;
        bench.longestAfterOpen = Math.max(0, ...tasks
          .filter((t) => t.startTime >= bench.open).map((t) => t.duration));
      } else {
        frame();
      }
    }, 0);
  });
  frame();
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
// Where the time went in one load: the viewer's marks, every request (start-end), the long
// tasks of the main thread before the first view.
async function describeLoad(page, result) {
  const [marks, requests] = await page.evaluate(() => [
    performance.getEntriesByType('mark').filter((m) => m.name.startsWith('rkif:'))
      .map((m) => `${m.name.slice(5)} ${Math.round(m.startTime)}`),
    performance.getEntriesByType('resource').filter((r) => !r.name.startsWith('data:'))
      .map((r) => `${r.name.replace(location.href, '')} ${Math.round(r.startTime)}-${Math.round(r.responseEnd)}`),
  ]);
  console.log('  viewer marks (ms since navigation):', marks.join(', '));
  console.log('  requests (start-end):', requests.join(', '));
  console.log('  long tasks before open (start+duration):',
    result.tasksBeforeOpen.map(([start, length]) => `${start}+${length}`).join(', ') || 'none');
}

// Loads alternate between the sites (a, b, a, b, ...) so that each sees the same load.
const results = roots.map(() => []);
try {
  for (let i = 0; i < loads; i++) {
    for (const [site, url] of urls.entries()) {
      const context = await browser.newContext();
      await context.addInitScript(watch);
      const page = await context.newPage();
      await page.goto(url, { waitUntil: 'commit' });
      await page.waitForFunction(() => window.__bench && window.__bench.all !== null, null,
        { timeout: 60_000, polling: 250 });
      const result = await page.evaluate(() => window.__bench);
      results[site].push(result);
      if (i === 0 || details) {
        console.log(`${roots[site]}, load ${i + 1}: open ${Math.round(result.open)} ms; status: ${await page.textContent('#status')}`);
        await describeLoad(page, result);
      }
      await context.close();
    }
  }
} finally {
  await browser.close();
}
for (const [site, root] of roots.entries()) {
  const show = (key) => results[site].map((r) => Math.round(r[key]));
  console.log(`${root}:`);
  console.log(`  open (ms), ${loads} loads: ${show('open').join(' ')}; median ${median(show('open'))} (target <= 1000)`);
  console.log(`  all views drawn (ms): ${show('all').join(' ')}; median ${median(show('all'))}`);
  console.log(`  longest task after open (ms): ${show('longestAfterOpen').join(' ')}; median ${median(show('longestAfterOpen'))}`);
}
console.log(`load average at the end (1, 5, 15 min): ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
process.exit(0);
