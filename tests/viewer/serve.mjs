// A static file server for the viewer's benchmark, run in a worker thread of its own so that
// its answers do not wait for the browser driver's event loop (as a separate server would).
// As a worker: workerData { roots: [folder, ...] }, posts back [port, ...], one server per
// folder. `serve` also works in the calling thread (bench.mjs --same-thread-server).
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { join, normalize, extname } from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';

const types = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm',
  '.css': 'text/css', '.json': 'application/json' };

/** Serves `root` on a free port of 127.0.0.1; resolves to the port. */
export function serve(root) {
  const server = createServer(async (req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, 'http://x').pathname)).replace(/^\/+/, '');
    if (path.startsWith('..')) { res.writeHead(403).end(); return; }
    try {
      const file = join(root, path || 'index.html');
      const body = await readFile(file);
      res.writeHead(200, { 'content-type': types[extname(file)] || 'application/octet-stream' }).end(body);
    } catch { res.writeHead(404).end(); }
  });
  return new Promise((ok) => server.listen(0, '127.0.0.1', () => ok(server.address().port)));
}

if (parentPort && workerData?.roots) {
  parentPort.postMessage(await Promise.all(workerData.roots.map(serve)));
}
