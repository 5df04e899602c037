// Opens a report site in headless Chromium several times and prints how long the first
// view takes: from navigation to the status line ready and the matrix drawn.
// usage: node bench.mjs <site folder>
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { join, normalize, extname } from 'node:path';
import { chromium } from 'playwright-core';

const root = process.argv[2];
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
const times = [];
try {
  for (let i = 0; i < 5; i++) {
    const page = await browser.newPage();
    const start = Date.now();
    await page.goto(url);
    await page.waitForSelector('#status[data-ready="true"]', { timeout: 30_000 });
    await page.waitForSelector('#matrix-plot .main-svg');
    await page.waitForSelector('#curves-plot .main-svg');
    times.push(Date.now() - start);
    if (i === 0) {
      console.log('status:', await page.textContent('#status'));
      console.log('page clock at ready (ms):', Math.round(await page.evaluate(() => performance.now())));
      console.log('slowest fetches (ms):', JSON.stringify(await page.evaluate(() => performance
        .getEntriesByType('resource').map((r) => [r.name.split('/').slice(-2).join('/'), Math.round(r.responseEnd - r.startTime)])
        .sort((a, b) => b[1] - a[1]).slice(0, 5))));
    }
    await page.close();
  }
} finally {
  await browser.close();
  server.close();
}
times.sort((a, b) => a - b);
console.log(`open to first view (ms), 5 loads: ${times.join(' ')}; median ${times[2]} (target <= 1000)`);
