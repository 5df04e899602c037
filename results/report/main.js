// Loads the viewer (wasm-bindgen output) and starts it; a failure is shown as text.
import init, { start } from './rkif_viewer.js';

function fail(error) {
  const item = document.createElement('li');
  item.className = 'page-error';
  item.textContent = 'viewer failed to start: ' + error;
  document.getElementById('problems').appendChild(item);
  document.getElementById('status').setAttribute('data-ready', 'error');
}

try {
  await init({ module_or_path: './rkif_viewer_bg.wasm' });
  await start();
} catch (error) {
  fail(error);
}
