// Opens a report site in headless Chromium several times and prints how long it takes to open.
// usage: node bench.mjs <site folder> [loads (default 7)]
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
// Each load uses a fresh browser context (empty cache). The first load's viewer
// performance marks (ms since navigation) are printed too.
//
// Measured on the project's shared 2-core machine, 2026-11-30 (load average in brackets;
// medians of 7 loads):
//   this viewer: open 1034, 961, 1061 ms [8.5-9.1], 927 ms [6.3-7.2]; all views 1.4-1.9 s;
//     longest task after open 120-240 ms. Wasm 772,640 bytes.
//   the viewer before (everything drawn at open, plotly.js run before the viewer), timed by
//     this script in the same half hour: 1.49 s [7.5-8], 1.40-1.82 s [8.8-9.7]. The old
//     script measured it at 1.44 s, and 1.97 s [7].
// What is left at open is plotly.js itself: downloading and compiling it (~0.45 s at load
// 9), running it (~0.25 s) and drawing the matrix (~0.15 s).
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join, normalize, extname } from 'node:path';
import { chromium } from 'playwright-core';

const root = process.argv[2];
const loads = Number(process.argv[3] || 7);
const types = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm',
  '.css': 'text/css', '.json': 'application/json' };
const server = createServer(async (req, res) => {
  const path = normalize(decodeURIComponent(new URL(req.url, 'http://x').pathname)).replace(/^\/+/, '');
  if (path.startsWith('..')) { res.writeHead(403).end(); return; }
  try {
    const file = join(root, path || 'index.html');
    const body = await readFile(file);
    res.writeHead(200, { 'content-type': types[extname(file)] || 'application/octet-stream' }).end(body);
  } catch { res.writeHead(404).end(); }
});
await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
const url = `http://127.0.0.1:${server.address().port}/`;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

// Runs in the page before its scripts; sets window.__bench = { open, all, longestAfterOpen }.
function watch() {
  const bench = { open: null, all: null, longestAfterOpen: 0 };
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
      if (open && bench.open === null) bench.open = now;
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
const results = [];
try {
  for (let i = 0; i < loads; i++) {
    const context = await browser.newContext();
    await context.addInitScript(watch);
    const page = await context.newPage();
    await page.goto(url, { waitUntil: 'commit' });
    await page.waitForFunction(() => window.__bench && window.__bench.all !== null, null,
      { timeout: 60_000, polling: 250 });
    results.push(await page.evaluate(() => window.__bench));
    if (i === 0) {
      console.log('status:', await page.textContent('#status'));
      console.log('viewer marks (ms since navigation):', (await page.evaluate(() => performance
        .getEntriesByType('mark').filter((m) => m.name.startsWith('rkif:'))
        .map((m) => `${m.name.slice(5)} ${Math.round(m.startTime)}`))).join(', '));
    }
    await context.close();
  }
} finally {
  await browser.close();
  server.close();
}
const show = (key) => results.map((r) => Math.round(r[key]));
console.log(`open (ms), ${loads} loads: ${show('open').join(' ')}; median ${median(show('open'))} (target <= 1000)`);
console.log(`all views drawn (ms): ${show('all').join(' ')}; median ${median(show('all'))}`);
console.log(`longest task after open (ms): ${show('longestAfterOpen').join(' ')}; median ${median(show('longestAfterOpen'))}`);
console.log(`load average at the end (1, 5, 15 min): ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
