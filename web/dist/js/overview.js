// The overview: interfaces with link state and rates, then one card per tap
// service with its status, delivered and dropped rates, a uPlot chart of the
// last minutes, and its flows with their matched rates; then the tap mirrors
// with their state, reason and encapsulation rates.

import uPlot from '../vendor/uPlot.esm.js';
import { h, $, statusBadge, replaceRows } from './dom.js';
import { si, bits, sumDrops, label, shortID, directionsText, snaplenText, filterText, pathText, historyToSave, historyRestored,
  ifaceKey, onNode } from './model.js';

// HISTORY is how many one-second samples a service chart keeps: 5 minutes.
const HISTORY = 300;

const charts = new Map(); // service id -> {plot, t, delivered, dropped, el}

const td = (lbl, content, cls) => h('td', { 'data-label': lbl, class: cls }, content);
const rate = (v) => (v === undefined ? '–' : si(v));

// HISTORY_KEY is where the samples outlive a reload: sessionStorage, so
// one tab's, gone with it.
const HISTORY_KEY = 'taas.history';
let restored = false;

// restoreHistory takes back, once, the samples a reload left behind, if
// they are from this run of taasd and recent (model.js historyRestored).
function restoreHistory(stats) {
  restored = true;
  let saved = null;
  try {
    saved = JSON.parse(sessionStorage.getItem(HISTORY_KEY) || 'null');
  } catch {
    saved = null; // unreadable: start afresh, as without it
  }
  for (const [id, c] of historyRestored(saved, stats, HISTORY, HISTORY)) {
    charts.set(id, { plot: null, ...c });
  }
}

function saveHistory(stats) {
  try {
    sessionStorage.setItem(HISTORY_KEY, JSON.stringify(historyToSave(
      [...charts].map(([id, c]) => [id, { t: c.t, delivered: c.delivered, dropped: c.dropped }]), stats)));
  } catch {
    // Storage full or refused (private mode): the charts simply start
    // afresh on the next reload.
  }
}

// recordHistory appends one sample per service to its chart series.
export function recordHistory(st) {
  const t = st.stats ? st.stats.time_unix_nano / 1e9 : 0;
  if (t && !restored) restoreHistory(st.stats);
  if (!t || !st.rates.dt) return;
  for (const svc of st.services) {
    let c = charts.get(svc.id);
    if (!c) {
      c = { plot: null, t: [], delivered: [], dropped: [] };
      charts.set(svc.id, c);
    }
    const r = st.rates.services.get(svc.id);
    c.t.push(t);
    c.delivered.push(r ? r.pps : null);
    c.dropped.push(r ? r.dropPps : null);
    if (c.t.length > HISTORY) {
      c.t.shift(); c.delivered.shift(); c.dropped.shift();
    }
  }
  saveHistory(st.stats);
}

export function renderOverview(st) {
  renderSummary(st);
  renderNodes(st);
  renderIfaces(st);
  renderServices(st);
  renderMirrors(st);
}

function renderSummary(st) {
  const ifaces = (st.stats && st.stats.interfaces) || [];
  const up = ifaces.filter((i) => i.link_up).length;
  const active = (arr) => arr.filter((x) => st.statusOf(x).status === 'ACTIVE').length;
  let delivered = 0;
  let dropped = 0;
  for (const r of st.rates.services.values()) { delivered += r.pps; dropped += r.dropPps; }
  const item = (name, value, field) => h('div', { class: 'sum-item' },
    h('span', { class: 'sum-value', 'data-field': field }, value), h('span', { class: 'sum-name' }, name));
  $('#summary').replaceChildren(
    item('interfaces up', `${up} / ${ifaces.length}`, 'ifaces-up'),
    item('tap services active', `${active(st.services)} / ${st.services.length}`, 'services-active'),
    item('tap flows active', `${active(st.flows)} / ${st.flows.length}`, 'flows-active'),
    item('tap mirrors active', `${active(st.mirrors)} / ${st.mirrors.length}`, 'mirrors-active'),
    item('delivered pkt/s', st.rates.dt ? si(delivered) : '–', 'delivered-pps'),
    item('dropped pkt/s', st.rates.dt ? si(dropped) : '–', 'dropped-pps'),
  );
}

// renderNodes lists a fleet's nodes (issue 14: GET /v2.0/taas/nodes, an
// admin's); a single appliance, or a caller who may not list them, has
// no Nodes panel and no node column.
function renderNodes(st) {
  const fleet = !!(st.stats && st.stats.node);
  for (const el of document.querySelectorAll('#ifaces-table .node-col')) el.hidden = !fleet;
  $('#nodes-panel').hidden = !fleet || !st.nodes;
  if (!fleet || !st.nodes) return;
  const rows = st.nodes.map((n) => h('tr', { 'data-node': n.name },
    h('th', { scope: 'row', 'data-label': 'Node' }, n.self ? `${n.name} (this one)` : n.name),
    td('State', h('span', { class: `status status-${n.alive ? 'active' : 'down'}`, 'data-field': 'alive' },
      h('span', { class: 'badge' }, n.alive ? 'ALIVE' : 'NOT SEEN'))),
    td('Last seen', n.last_seen),
    td('Version', n.version || '–'),
    td('API', n.api_address || '–'),
  ));
  $('#nodes-table tbody').replaceChildren(...rows);
}

function renderIfaces(st) {
  const ifaces = (st.stats && st.stats.interfaces) || [];
  const fleet = !!(st.stats && st.stats.node);
  $('#ifaces-empty').hidden = ifaces.length > 0;
  const rows = ifaces.map((i) => {
    const r = st.rates.ifaces.get(ifaceKey(i)) || {};
    const node = td('Node', i.node || '–', 'node-col');
    node.hidden = !fleet;
    return h('tr', { 'data-iface': i.name, 'data-node': i.node || '' },
      h('th', { scope: 'row', 'data-label': 'Interface' }, i.name),
      node,
      td('Role', i.role),
      td('Link', h('span', { class: `status status-${i.link_up ? 'active' : 'down'}`, 'data-field': 'link' },
        h('span', { class: 'badge' }, i.link_up ? 'UP' : 'DOWN'))),
      td('Data path', h('span', { 'data-field': 'path', 'data-value': i.path || '' }, pathText(i) || '–')),
      td('RX pkt/s', num('rx-pps', rate(r.rxPps), r.rxPps), 'num'),
      td('RX bit/s', num('rx-bps', r.rxBps === undefined ? '–' : bits(r.rxBps), r.rxBps), 'num'),
      td('TX pkt/s', num('tx-pps', rate(r.txPps), r.txPps), 'num'),
      td('TX bit/s', num('tx-bps', r.txBps === undefined ? '–' : bits(r.txBps), r.txBps), 'num'),
      td('Drops/s', dropText(r), 'num'),
    );
  });
  // Rates change every second; the table has no controls, so rebuilding it
  // cannot take focus away from anything.
  $('#ifaces-table tbody').replaceChildren(...rows);
}

// dropText is a drops-per-second figure followed by its reasons.
function dropText(r) {
  const reasons = Object.entries((r && r.drops) || {}).filter(([, v]) => v > 0)
    .map(([k, v]) => `${k}: ${si(v)}/s`).join(', ');
  return h('span', { title: reasons || 'no drops', 'data-field': 'drops-pps', 'data-value': r && r.dropPps },
    rate(r && r.dropPps), reasons ? ` (${reasons})` : '');
}

// renderMirrors lists the tap mirrors: where the copies go (the uplink
// when taas/stats names it: for admins), the state with its reason, and
// the encapsulation rates and total.
function renderMirrors(st) {
  $('#mirrors-empty').hidden = st.mirrors.length > 0;
  const rows = st.mirrors.map((m) => {
    const s = st.statusOf(m);
    const src = st.portsByID.get(m.port_id);
    const srcIface = src && src['binding:profile'] && src['binding:profile'].interface;
    const ms = st.mirrorStats.get(m.id);
    const r = st.rates.mirrors.get(m.id);
    const uplink = ms && ms.uplink ? ` via ${ms.uplink}` : '';
    return h('tr', { 'data-id': m.id },
      h('th', { scope: 'row', 'data-label': 'Mirror' }, label(m)),
      td('Source port', `${src ? label(src) : shortID(m.port_id)}${srcIface ? ` (${srcIface}${onNode(ms)})` : onNode(ms)}`),
      td('Tunnel', [h('span', { 'data-field': 'tunnel' }, `${m.mirror_type} to ${m.remote_ip}${uplink}`),
        h('br'), h('code', { 'data-field': 'directions' }, directionsText(m.directions)),
        h('br'), h('span', { 'data-field': 'snaplen' }, `copies of ${snaplenText(m.snaplen)}`)]),
      td('Status', statusBadge(s.status, s.reason)),
      td('Encap. pkt/s', num('encap-pps', r ? si(r.pps) : '–', r && r.pps), 'num'),
      td('Encap. bit/s', num('encap-bps', r ? bits(r.bps) : '–', r && r.bps), 'num'),
      td('Truncated pkt/s', num('truncated-pps', r ? si(r.truncPps) : '–', r && r.truncPps), 'num'),
      td('Drops/s', dropText(r), 'num'),
      td('Encap. packets', num('encap-packets', ms ? si(ms.encapsulated_packets) : '–', ms && ms.encapsulated_packets), 'num'),
    );
  });
  // Like the interfaces' table: no controls, so rebuilding it every
  // second takes focus from nothing.
  $('#mirrors-table tbody').replaceChildren(...rows);
}

function renderServices(st) {
  const box = $('#services');
  $('#services-empty').hidden = st.services.length > 0;
  const seen = new Set();
  for (const svc of st.services) {
    seen.add(svc.id);
    let card = box.querySelector(`article[data-id="${svc.id}"]`);
    if (!card) {
      card = serviceCard(svc);
      box.append(card);
    }
    updateServiceCard(card, svc, st);
  }
  for (const card of [...box.children]) {
    if (!seen.has(card.dataset.id)) {
      const c = charts.get(card.dataset.id);
      if (c && c.plot) c.plot.destroy();
      charts.delete(card.dataset.id);
      card.remove();
    }
  }
}

function serviceCard(svc) {
  const hid = `svc-${svc.id}`;
  return h('article', { class: 'card service', 'data-id': svc.id, 'aria-labelledby': hid },
    h('header', { class: 'card-head' },
      h('h4', { id: hid, 'data-field': 'name' }),
      h('span', { 'data-field': 'status' })),
    h('p', { class: 'meta', 'data-field': 'port' }),
    h('dl', { class: 'kv' },
      kv('Delivered pkt/s', 'delivered-pps'), kv('Delivered bit/s', 'delivered-bps'),
      kv('Dropped pkt/s', 'dropped-pps'), kv('Delivered packets', 'delivered-packets'),
      kv('Dropped packets', 'dropped-packets'), kv('Drops by reason', 'drops')),
    h('div', { class: 'chart', role: 'img', 'data-field': 'chart' }),
    h('div', { class: 'table-wrap' },
      h('table', { class: 'stack flows' },
        h('caption', { class: 'sr-only' }, 'Tap flows of this service'),
        h('thead', {}, h('tr', {},
          ...['Flow', 'Source port', 'Direction', 'VLAN filter', 'Filter', 'Status', 'Matched pkt/s', 'Rejected pkt/s',
            'Matched bit/s', 'Matched packets', 'Rejected packets']
            .map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody'))),
  );
}

function kv(name, field) {
  return h('div', {}, h('dt', {}, name), h('dd', { 'data-field': field }, '–'));
}

// setField shows content in the element of root named data-field=field;
// raw, when given, is kept in data-value (the number before formatting,
// which the browser tests read).
function setField(root, field, content, raw) {
  const el = root.querySelector(`[data-field="${field}"]`);
  if (content instanceof Node) el.replaceChildren(content);
  else if (el.textContent !== content) el.textContent = content;
  if (raw !== undefined) el.dataset.value = String(raw);
  else delete el.dataset.value;
}

// num is a cell or span that shows a formatted number and keeps the raw one.
const num = (field, text, raw) => h('span', { 'data-field': field, 'data-value': raw }, text);

function updateServiceCard(card, svc, st) {
  const s = st.statusOf(svc);
  const port = st.portsByID.get(svc.port_id);
  const iface = port && port['binding:profile'] && port['binding:profile'].interface;
  const ss = st.serviceStats.get(svc.id);
  const r = st.rates.services.get(svc.id);
  setField(card, 'name', label(svc));
  const badge = card.querySelector('[data-field="status"]');
  if (badge.dataset.sig !== s.status + s.reason) {
    badge.dataset.sig = s.status + s.reason;
    badge.replaceChildren(statusBadge(s.status, s.reason));
  }
  setField(card, 'port', `port ${port ? label(port) : shortID(svc.port_id)} → ${iface || 'no interface bound'}${onNode(ss)}, ` +
    `copies of ${snaplenText(svc.snaplen)}`);
  setField(card, 'delivered-pps', r ? si(r.pps) : '–', r && r.pps);
  setField(card, 'delivered-bps', r ? bits(r.bps) : '–', r && r.bps);
  setField(card, 'dropped-pps', r ? si(r.dropPps) : '–', r && r.dropPps);
  setField(card, 'delivered-packets', ss ? si(ss.delivered_packets) : '–', ss && ss.delivered_packets);
  setField(card, 'dropped-packets', ss ? si(sumDrops(ss.drops)) : '–', ss && sumDrops(ss.drops));
  const reasons = ss ? Object.entries(ss.drops || {}).filter(([, v]) => v > 0).map(([k, v]) => `${k} ${si(v)}`) : [];
  setField(card, 'drops', reasons.length ? reasons.join(', ') : 'none');

  const flows = st.flows.filter((f) => f.tap_service_id === svc.id);
  const rows = flows.map((f) => {
    const fs = st.statusOf(f);
    const src = st.portsByID.get(f.source_port);
    const srcIface = src && src['binding:profile'] && src['binding:profile'].interface;
    const fr = st.rates.flows.get(f.id);
    const fst = st.flowStats.get(f.id);
    return h('tr', { 'data-id': f.id },
      h('th', { scope: 'row', 'data-label': 'Flow' }, label(f)),
      td('Source port', `${src ? label(src) : shortID(f.source_port)}${srcIface ? ` (${srcIface}${onNode(fst)})` : onNode(fst)}`),
      td('Direction', f.direction),
      td('VLAN filter', f.vlan_filter === null || f.vlan_filter === undefined ? 'all' : f.vlan_filter),
      td('Filter', h('code', { 'data-field': 'filter' }, filterText(f.filter))),
      td('Status', statusBadge(fs.status, fs.reason)),
      td('Matched pkt/s', num('matched-pps', fr ? si(fr.pps) : '–', fr && fr.pps), 'num'),
      td('Rejected pkt/s', num('rejected-pps', fr ? si(fr.rejectedPps) : '–', fr && fr.rejectedPps), 'num'),
      td('Matched bit/s', num('matched-bps', fr ? bits(fr.bps) : '–', fr && fr.bps), 'num'),
      td('Matched packets', num('matched-packets', fst ? si(fst.matched_packets) : '–', fst && fst.matched_packets), 'num'),
      td('Rejected packets', num('rejected-packets', fst ? si(fst.rejected_packets) : '–', fst && fst.rejected_packets), 'num'),
    );
  });
  if (rows.length === 0) {
    rows.push(h('tr', {}, h('td', { colspan: 11, class: 'empty' }, 'No tap flows feed this service.')));
  }
  card.querySelector('table.flows tbody').replaceChildren(...rows);
  drawChart(card, svc);
}

function drawChart(card, svc) {
  const c = charts.get(svc.id);
  const el = card.querySelector('[data-field="chart"]');
  el.setAttribute('aria-label', `Delivered and dropped packets per second of tap service ${label(svc)}, last ${HISTORY / 60} minutes`);
  if (!c || c.t.length === 0) return;
  // For the browser tests: how many samples, and the oldest one's time.
  el.dataset.samples = String(c.t.length);
  el.dataset.first = String(c.t[0]);
  const data = [c.t, c.delivered, c.dropped];
  const width = Math.max(200, el.clientWidth);
  if (!c.plot) {
    c.plot = new uPlot({
      width,
      height: 160,
      // A window that slides with the newest sample: as much history as
      // there is, at least a minute and at most HISTORY seconds.
      scales: { x: { time: true, range: (u, min, max) => [max - Math.min(HISTORY, Math.max(60, max - min)), max] }, y: { range: (u, min, max) => [0, Math.max(10, max * 1.1)] } },
      axes: [{}, { size: 56, values: (u, vals) => vals.map((v) => si(v)) }],
      series: [
        {},
        { label: 'delivered pkt/s', stroke: '#2f7d32', width: 2, fill: 'rgba(47,125,50,0.08)', value: (u, v) => (v === null ? '–' : si(v)) },
        { label: 'dropped pkt/s', stroke: '#c62828', width: 2, value: (u, v) => (v === null ? '–' : si(v)) },
      ],
    }, data, el);
    c.el = el;
    new ResizeObserver(() => {
      const w = Math.max(200, el.clientWidth);
      if (w !== c.plot.width) c.plot.setSize({ width: w, height: 160 });
    }).observe(el);
  } else {
    c.plot.setData(data);
  }
}
