// The Capture dialog (issue 12): a live pcapng capture of a tap service,
// tap flow or tap mirror, streamed from GET .../{id}/capture.
//
// 1. Start sends the seconds, packets and snaplen as typed (the API
//    judges them; a 400, 404 or 409 shows its NeutronError message);
// 2. the answer's body is read chunk by chunk (fetch's ReadableStream):
//    each chunk is kept, and a PcapngCounter counts its packet blocks, so
//    the dialog shows packets, bytes and (from the appliance's statistics
//    blocks) drops while the capture runs;
// 3. when the appliance ends the stream (the seconds or packets are
//    reached, or the resource was deleted), or Stop aborts it, the kept
//    chunks are saved as one file, named by Content-Disposition, up to the
//    last whole block (a stream cut mid-block still opens in Wireshark).
// The whole capture is held in the page's memory until it is saved.

import * as api from './api.js';
import { h, $ } from './dom.js';
import { PcapngCounter, trimmed } from './pcapng.js';
import { si, bytesText, captureQuery, captureParam, fileName, label, CAPTURE_PARAMS } from './model.js';

// SHOW_EVERY_MS is how often the running counts are redrawn: chunks may
// come thousands of times a second.
const SHOW_EVERY_MS = 100;
// MAX_KEPT_BYTES bounds what the page keeps of a capture before saving it
// (the stream is held in memory until then).
const MAX_KEPT_BYTES = 256 * 1024 * 1024;

let running = null; // {ctl, counter} while a capture streams
let target = null; // {coll, title, obj}

const fieldOf = { duration: '#capture-seconds', count: '#capture-count', snaplen: '#capture-snaplen' };

// captureButton is the Capture button of a tap service's, tap flow's or
// tap mirror's row: coll is its collection (taas/tap_services), title
// what people call it (tap service).
export function captureButton(coll, title, obj) {
  return h('button', { type: 'button', 'aria-label': `Capture ${title} ${label(obj)}`,
    onclick: () => open({ coll, title, obj }) }, 'Capture');
}

export function initCapture() {
  const dlg = $('#capture-dialog');
  $('#capture-form').addEventListener('submit', (ev) => { ev.preventDefault(); start(); });
  $('#capture-stop').addEventListener('click', () => { if (running) running.ctl.abort(); });
  $('#capture-close').addEventListener('click', () => dlg.close());
  // Escape while a capture runs would leave it running unseen: Stop ends
  // it (and saves what came).
  dlg.addEventListener('cancel', (ev) => { if (running) ev.preventDefault(); });
  for (const k of CAPTURE_PARAMS) {
    $(fieldOf[k]).addEventListener('input', (ev) => ev.target.removeAttribute('aria-invalid'));
  }
}

function open(t) {
  if (running) return;
  target = t;
  $('#capture-title').textContent = `Capture ${t.title} ${label(t.obj)}`;
  setError('');
  setState('');
  show(null);
  const dlg = $('#capture-dialog');
  if (!dlg.open) dlg.showModal();
  $('#capture-seconds').focus();
}

function setError(msg, param) {
  $('#capture-error').textContent = msg;
  for (const k of CAPTURE_PARAMS) $(fieldOf[k]).removeAttribute('aria-invalid');
  if (param) {
    const el = $(fieldOf[param]);
    el.setAttribute('aria-invalid', 'true');
    el.focus();
  }
}

function setState(text) {
  $('#capture-state').textContent = text;
}

// show draws counter's figures (dashes before a capture).
function show(counter, started) {
  const box = $('#capture-counts');
  const set = (field, text, raw) => {
    const el = box.querySelector(`[data-field="${field}"]`);
    el.textContent = text;
    if (raw === undefined || raw === null) delete el.dataset.value;
    else el.dataset.value = String(raw);
  };
  set('capture-packets', counter ? si(counter.packets) : '–', counter && counter.packets);
  set('capture-bytes', counter ? bytesText(counter.bytes) : '–', counter && counter.bytes);
  set('capture-dropped', counter && counter.dropped !== null ? si(counter.dropped) : '–', counter && counter.dropped);
  set('capture-elapsed', started ? `${Math.floor((Date.now() - started) / 1000)} s` : '–');
}

function setRunning(on) {
  $('#capture-start').hidden = on;
  $('#capture-stop').hidden = !on;
  $('#capture-close').disabled = on;
  for (const k of CAPTURE_PARAMS) $(fieldOf[k]).disabled = on;
  $('#capture-dialog').dataset.running = on ? 'true' : 'false'; // for tests
}

async function start() {
  if (running || !target) return;
  const t = target;
  const params = Object.fromEntries(CAPTURE_PARAMS.map((k) => [k, $(fieldOf[k]).value]));
  const path = `/v2.0/${t.coll}/${encodeURIComponent(t.obj.id)}/capture${captureQuery(params)}`;
  const ctl = new AbortController();
  const counter = new PcapngCounter();
  running = { ctl, counter };
  setError('');
  setState('Starting…');
  show(counter);
  setRunning(true);
  let res;
  try {
    res = await api.capture(path, ctl.signal);
  } catch (err) {
    running = null;
    setRunning(false);
    setState('');
    if (err.name === 'AbortError') return;
    if (err.status !== 401) setError(err.message, captureParam(err)); // a 401 brings the token dialog
    return;
  }
  const started = Date.now();
  setState(`Capturing ${t.title} ${label(t.obj)}…`);
  const chunks = [];
  let broke = '';
  let last = 0;
  let kept = 0;
  let full = false;
  const reader = res.body.getReader();
  const tick = setInterval(() => show(counter, started), 1000); // the seconds, when no chunk comes
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      chunks.push(value);
      counter.push(value);
      kept += value.length;
      if (kept >= MAX_KEPT_BYTES) {
        // The page holds the whole capture until it is saved: stop before
        // the tab runs out of memory, and save what came.
        full = true;
        ctl.abort();
        break;
      }
      if (Date.now() - last >= SHOW_EVERY_MS) {
        last = Date.now();
        show(counter, started);
      }
    }
  } catch (err) {
    if (err.name !== 'AbortError') broke = err.message || String(err);
  } finally {
    clearInterval(tick);
  }
  running = null;
  show(counter, started);
  setRunning(false);
  if (counter.error) {
    setError(`The answer is not a pcapng stream (${counter.error}); nothing was saved.`);
    setState('');
    return;
  }
  const fallback = `${t.coll.split('/').pop().replace(/s$/, '')}-${label(t.obj)}.pcapng`;
  const name = fileName(res.headers.get('Content-Disposition'), fallback);
  save(trimmed(chunks, counter.whole), name);
  const dropped = counter.dropped ? `, ${si(counter.dropped)} dropped by the appliance` : '';
  setState(`Saved ${name}: ${si(counter.packets)} packets${dropped}.`);
  if (broke) setError(`The stream broke off (${broke}); what came is saved.`);
  else if (full) setError(`Stopped at ${si(MAX_KEPT_BYTES)}B, the most the page keeps; what came is saved. Use curl for longer captures.`);
}

// save hands the browser a file made of chunks to download.
function save(chunks, name) {
  const url = URL.createObjectURL(new Blob(chunks, { type: 'application/x-pcapng' }));
  const a = h('a', { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  // The download has its own reference by now; the blob may go later.
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
