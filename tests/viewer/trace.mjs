// Where the time goes when a report site opens: one load in headless Chromium with a
// performance trace, printed as a timeline (ms since the page's request): requests, the
// viewer's marks, and every trace event of the page's process longer than TRACE_MIN_US
// (default 8000 us), main thread or others (script streaming, for one). A diagnostic for
// the benchmark (bench.mjs), not a test. The trace itself goes to [trace.json] if given
// (chrome://tracing or Perfetto open it). TRACE_CATEGORIES (comma-separated) replaces the
// default categories; `v8` and `disabled-by-default-*` ones add detail but also cost (V8
// then collects source positions, which shows up as main-thread parsing).
// usage: node trace.mjs <site folder> [trace.json]
import { writeFile } from 'node:fs/promises';
import { Worker } from 'node:worker_threads';
import { chromium } from 'playwright-core';

const [root, traceOut] = process.argv.slice(2);
if (!root) {
  console.error('usage: node trace.mjs <site folder> [trace.json]');
  process.exit(2);
}
const [port] = await new Promise((ok, no) => {
  const worker = new Worker(new URL('./serve.mjs', import.meta.url), { workerData: { roots: [root] } });
  worker.once('message', ok);
  worker.once('error', no);
});
const url = `http://127.0.0.1:${port}/`;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  await browser.startTracing(page, {
    categories: (process.env.TRACE_CATEGORIES || 'devtools.timeline,v8.execute,blink.user_timing,loading').split(','),
  });
  await page.goto(url, { waitUntil: 'commit' });
  await page.waitForFunction(() => !document.querySelector('[data-pending]')
    && document.querySelector('#status[data-ready]'), null, { timeout: 60_000, polling: 250 });
  await page.waitForTimeout(300);
  const trace = JSON.parse((await browser.stopTracing()).toString());
  if (traceOut) await writeFile(traceOut, JSON.stringify(trace));
  const events = trace.traceEvents;
  const nav = events.find((e) => e.name === 'navigationStart' || e.name === 'NavigationStart'
    || (e.name === 'ResourceSendRequest' && e.args?.data?.url === url));
  const t0 = nav.ts;
  const ms = (ts) => ((ts - t0) / 1000).toFixed(0).padStart(5);
  const main = events.find((e) => e.name === 'TracingStartedInBrowser')?.args?.data?.frames?.[0];
  const rendererPid = events.find((e) => e.name === 'ResourceSendRequest' && e.args?.data?.url === url)?.pid;
  const mainTid = events.find((e) => e.pid === rendererPid && e.name === 'thread_name'
    && e.args?.name === 'CrRendererMain')?.tid;
  const lines = [];
  const name = (u) => (u || '').replace(url, '');
  for (const e of events) {
    const d = e.args?.data || {};
    if (e.name === 'ResourceSendRequest') lines.push([e.ts, `net   send ${name(d.url)}`]);
    if (e.name === 'ResourceReceiveResponse') lines.push([e.ts, `net   response ${name(d.url)}`]);
    if (e.name === 'ResourceFinish') lines.push([e.ts, `net   finish ${d.requestId} ${d.encodedDataLength} B`]);
    if (e.cat?.includes('blink.user_timing') && e.name.startsWith('rkif:')) lines.push([e.ts, `mark  ${e.name}`]);
    if (e.pid === rendererPid && e.ph === 'X' && e.dur > Number(process.env.TRACE_MIN_US || 8000)) {
      const thread = e.tid === mainTid ? 'main' : `t${e.tid}`;
      const what = d.url ? name(d.url) : (d.functionName || d.type || '');
      lines.push([e.ts, `${thread.padEnd(6)}${e.name} ${what} ${(e.dur / 1000).toFixed(0)} ms (to ${ms(e.ts + e.dur)})`]);
    }
  }
  lines.sort((a, b) => a[0] - b[0]);
  for (const [ts, text] of lines) if (ts >= t0) console.log(`${ms(ts)}  ${text}`);
  console.log('marks:', (await page.evaluate(() => performance.getEntriesByType('mark')
    .filter((m) => m.name.startsWith('rkif:')).map((m) => `${m.name.slice(5)} ${Math.round(m.startTime)}`))).join(', '));
  console.log('resources:', (await page.evaluate(() => performance.getEntriesByType('resource')
    .map((r) => `${r.name.replace(location.href, '')} ${Math.round(r.startTime)}-${Math.round(r.responseEnd)}`))).join(', '));
} finally {
  await browser.close();
}
process.exit(0);
