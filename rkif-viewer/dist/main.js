// Loads the viewer (wasm-bindgen output) and starts it; a failure is shown as text.
// plotly.js loads on its own (index.html, async): the viewer fetches and reads the runs
// meanwhile and waits for plotly only to draw.
import init, { start } from './rkif_viewer.js';

function fail(error) {
  const item = document.createElement('li');
  item.className = 'page-error';
  item.textContent = 'viewer failed to start: ' + error;
  document.getElementById('problems').appendChild(item);
  document.getElementById('status').setAttribute('data-ready', 'error');
}

// Settles when plotly.min.js has run (window.Plotly set) or failed to. The page's load
// event waits for async scripts, so it settles this even when the script failed before
// this module ran.
function plotlyLoaded() {
  return new Promise((ok, no) => {
    const settle = () => (window.Plotly ? ok() : no(new Error('plotly.min.js could not be loaded')));
    if (window.Plotly || document.readyState === 'complete') {
      settle();
      return;
    }
    const script = document.getElementById('plotly');
    script.addEventListener('load', settle);
    script.addEventListener('error', settle);
    window.addEventListener('load', settle);
  });
}

// Marks on the page's performance timeline (as the viewer's `rkif:*`), for the benchmark.
const mark = (name) => performance.mark && performance.mark(name);

try {
  mark('rkif:main-js');
  const plotly = plotlyLoaded().finally(() => mark('rkif:plotly-loaded'));
  plotly.catch(() => {}); // handled by start(); not "unhandled" if the wasm fails first
  // Streaming compilation: the wasm compiles while it downloads (preloaded by index.html).
  await init({ module_or_path: './rkif_viewer_bg.wasm' });
  mark('rkif:wasm-ready');
  await start(plotly);
} catch (error) {
  fail(error);
}
