// Drives the report site in headless Chromium and prints what it saw as one JSON object;
// tests/tests/viewer.rs serves the site, runs this, and asserts on the JSON.
//
// usage: node e2e.mjs <site url> <screenshot dir> <run zip> [<dropped file> ...]
import { chromium } from 'playwright-core';

const [site, shots, zip, ...dropped] = process.argv.slice(2);
const origin = new URL(site).origin;
const seen = { requests_elsewhere: [], console_errors: [], views: {} };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
// Bounded: the whole session may not hang the test.
const deadline = setTimeout(() => { console.error('e2e: timed out'); process.exit(3); }, 90_000);

try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.on('request', (r) => { if (!r.url().startsWith(origin)) seen.requests_elsewhere.push(r.url()); });
  page.on('console', (m) => { if (m.type() === 'error') seen.console_errors.push(m.text()); });
  page.on('pageerror', (e) => seen.console_errors.push(String(e)));

  const ready = async () => {
    await page.waitForSelector('#status[data-ready]');
    return page.getAttribute('#status', 'data-ready');
  };
  const texts = (selector) => page.$$eval(selector, (els) => els.map((e) => e.textContent));
  const tableRows = (selector) => page.$$eval(`${selector} tbody tr`,
    (rows) => rows.map((r) => [...r.querySelectorAll('td')].map((c) => c.textContent)));
  const svgTexts = (selector) => texts(`${selector} svg text`);
  const shot = (selector, name) => page.locator(selector).screenshot({ path: `${shots}/${name}.png` });
  const selectRun = async (index) => {
    await page.click(`#runs button[data-index="${index}"]`);
    await page.waitForSelector(`#runs button.selected[data-index="${index}"]`);
  };
  // Figures below the first view are drawn after it (as they scroll near, or when the page
  // is idle); each waiting one carries data-pending.
  const allDrawn = () => page.waitForFunction(() => !document.querySelector('[data-pending]'));

  await page.goto(site);
  seen.ready = await ready();
  seen.status = await page.textContent('#status');
  seen.runs = await texts('#runs button');
  seen.problems = await texts('#problems li');

  // Run 0: every view.
  await page.waitForSelector('#matrix-plot .main-svg');
  seen.views.summary = await tableRows('#summary-table');
  seen.views.metrics = await tableRows('#metric-table');
  seen.views.matrix_text = await svgTexts('#matrix-plot');
  seen.views.forgetting_text = await svgTexts('#forgetting-plot');
  await shot('#view-summary', 'summary');
  await shot('#view-matrix', 'matrix');

  await page.waitForSelector('#importance-plot[data-step]');
  const importance = { steps: [], labels: [] };
  importance.tasks = await texts('#importance-task option');
  await page.selectOption('#importance-task', '1');
  importance.max = await page.getAttribute('#importance-round', 'max');
  for (const value of ['0', '1', importance.max]) {
    const before = await page.getAttribute('#importance-plot', 'data-step');
    await page.$eval('#importance-round', (el, v) => {
      el.value = v; el.dispatchEvent(new Event('input'));
    }, value);
    await page.waitForFunction((b) => {
      const now = document.querySelector('#importance-plot').getAttribute('data-step');
      return now && (now !== b || document.querySelector('#importance-round').value === '0');
    }, before);
    await page.waitForTimeout(100);
    importance.steps.push(await page.getAttribute('#importance-plot', 'data-step'));
    importance.labels.push(await page.textContent('#importance-round-label'));
  }
  importance.layer_text = await svgTexts('#importance-plot');
  await page.click('#map-button');
  await page.waitForSelector('#map-plot .main-svg');
  importance.map_title = (await svgTexts('#map-plot')).find((t) => t.includes('block means')) || null;
  seen.views.importance = importance;
  await shot('#view-importance', 'importance');

  await page.waitForSelector('#fusion-plot .main-svg');
  await page.waitForSelector('#curves-plot .main-svg');
  seen.views.fusion_traces = await page.$$eval('#fusion-plot .scatterlayer .trace', (t) => t.length);
  seen.views.curves_traces = await page.$$eval('#curves-plot .scatterlayer .trace', (t) => t.length);
  await shot('#view-fusion', 'fusion');
  await shot('#view-curves', 'curves');

  await page.waitForSelector('#compare-plot .main-svg');
  seen.views.compare = await tableRows('#compare-table');
  seen.views.compare_subplots = await page.$$eval('#compare-plot .heatmaplayer', (t) => t.length);
  await shot('#view-compare', 'compare');

  // Every run, for the hostile and malformed ones: text as shown, sections present.
  seen.each_run = [];
  for (let index = 0; index < seen.runs.length; index++) {
    await selectRun(index);
    await allDrawn();
    seen.each_run.push({
      label: seen.runs[index],
      summary: await tableRows('#summary-table'),
      unavailable: await texts('#run-view .unavailable'),
      svg_text: await svgTexts('#run-view'),
      run_view_html: await page.$eval('#run-view', (e) => e.innerHTML.length),
    });
    await page.screenshot({ path: `${shots}/run-${index}.png`, fullPage: true });
  }
  seen.pwned = await page.evaluate(() => window.__pwned || null);
  seen.injected = await page.$$eval('#run-view img, #run-view script, #runs img, #problems img', (e) => e.length);

  // ?run=<url>: a run folder outside the report's index.
  const extra = new URL('extra/b', site).href;
  await page.goto(`${site}?run=${encodeURIComponent(extra)}`);
  await ready();
  seen.url_run = {
    runs: await texts('#runs button'),
    selected: await page.textContent('#runs button.selected'),
    metrics: await tableRows('#metric-table'),
  };

  // Dropped files (through the file input; the drop zone calls the same code).
  if (dropped.length) {
    await page.setInputFiles('#file-input', dropped);
    await page.waitForFunction(() => document.querySelector('#runs button.selected')?.textContent.length > 0
      && document.querySelectorAll('#runs button').length > 5);
    await page.waitForSelector('#matrix-plot .main-svg');
    seen.dropped = {
      selected: await page.textContent('#runs button.selected'),
      metrics: await tableRows('#metric-table'),
      problems: await texts('#problems li'),
      snapshots: await texts('#importance-task option'),
    };
    await page.screenshot({ path: `${shots}/dropped.png`, fullPage: true });
  }

  // A zip of a run folder, on a fresh page.
  await page.goto(site);
  await ready();
  const listed = (await texts('#runs button')).length;
  await page.setInputFiles('#file-input', [zip]);
  await page.waitForFunction((n) => document.querySelectorAll('#runs button').length > n, listed);
  await page.waitForSelector('#matrix-plot .main-svg');
  await page.waitForSelector('#importance-plot[data-step]');
  seen.zipped = {
    selected: await page.textContent('#runs button.selected'),
    metrics: await tableRows('#metric-table'),
    problems: (await texts('#problems li')).filter((p) => !p.startsWith('runs/malformed/')),
    snapshots: await texts('#importance-task option'),
  };
  await shot('#view-importance', 'zipped');
} finally {
  clearTimeout(deadline);
  await browser.close();
}
console.log(JSON.stringify(seen));
