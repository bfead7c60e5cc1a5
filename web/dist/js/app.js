// The dashboard's entry point: state, the two views, and keeping them live.
//
// 1. lists (networks, ports, tap services, tap flows, tap mirrors) are
//    fetched at start,
//    after every change made here, on every server-sent event from
//    /v2.0/taas/events, and every few seconds as a backstop;
// 2. /v2.0/taas/stats is fetched every second: two snapshots give the rates,
//    and its entries carry the live status and status_reason (tap mirrors
//    have no other: the API gives them no status attribute);
// 3. the current view renders from that state.
// EventSource cannot send X-Auth-Token: in token mode the stream gets the
// token as ?token= (taasd accepts that on this one URL), and if the stream
// fails the lists are polled every 2 s instead.

import * as api from './api.js';
import { $, $$ } from './dom.js';
import { rates } from './model.js';
import { renderOverview, recordHistory } from './overview.js';
import { initManage, renderManage } from './manage.js';
import { initCapture } from './capture.js';

const STATS_EVERY_MS = 1000;
const LISTS_EVERY_MS = 5000; // with events; 2 s without
const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/gi;

const st = {
  networks: [], ports: [], services: [], flows: [], mirrors: [],
  portsByID: new Map(),
  stats: null, prevStats: null,
  // nodes are a fleet's nodes (GET /v2.0/taas/nodes), null when not
  // listed (a single appliance, or not an admin).
  nodes: null,
  serviceStats: new Map(), flowStats: new Map(), mirrorStats: new Map(),
  rates: rates(null, null),
  // statusOf prefers the live status of the stats extension over the
  // resource's stored one, and carries the reason when it is not ACTIVE.
  statusOf(x) {
    const live = this.serviceStats.get(x.id) || this.flowStats.get(x.id) || this.mirrorStats.get(x.id);
    if (live && live.status) return { status: live.status, reason: this.named(live.status_reason || '') };
    return { status: x.status, reason: this.named(x.status_reason || '') };
  },
  // named replaces the ids in a status reason with the names people gave
  // ("tap service 0369...: interface mon0 is down" -> "tap service ids: ...").
  named(text) {
    return text.replace(UUID, (id) => {
      const r = this.portsByID.get(id) || this.services.find((s) => s.id === id) || this.flows.find((f) => f.id === id)
        || this.mirrors.find((m) => m.id === id);
      return r && r.name ? r.name : id;
    });
  },
};

let stream = null;       // the EventSource, connecting or open
let events = false;      // whether the stream is open
let retryTimer = 0;
let listsTimer = 0;
let authWanted = false;
let statsFailing = false;

function view() {
  return location.hash === '#/manage' ? 'manage' : 'overview';
}

function render() {
  const v = view();
  $('#view-overview').hidden = v !== 'overview';
  $('#view-manage').hidden = v !== 'manage';
  for (const a of $$('nav a')) {
    if (a.getAttribute('href') === `#/${v}`) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (v === 'overview') renderOverview(st);
  else renderManage(st);
}

async function refreshLists() {
  const [n, p, s, f, m] = await Promise.all([
    api.list('networks'), api.list('ports'), api.list('taas/tap_services'), api.list('taas/tap_flows'),
    api.list('taas/tap_mirrors'),
  ]);
  st.networks = n.networks || [];
  st.ports = p.ports || [];
  st.services = s.tap_services || [];
  st.flows = f.tap_flows || [];
  st.mirrors = m.tap_mirrors || [];
  st.portsByID = new Map(st.ports.map((x) => [x.id, x]));
  await refreshNodes();
  showProject();
  render();
  document.body.dataset.loaded = 'true'; // for tests: the lists are in
}

// refreshNodes lists a fleet's nodes with the lists (issue 14); a 403 (not
// an admin) or a single appliance leaves the Nodes panel out.
async function refreshNodes() {
  if (!st.stats || !st.stats.node) {
    st.nodes = null;
    return;
  }
  try {
    st.nodes = (await api.nodes()).nodes || [];
  } catch {
    st.nodes = null;
  }
}

// showProject names the token's project in the top bar, as far as the
// resources it sees tell (the API has no "who am I").
function showProject() {
  const el = $('#project');
  const projects = new Set([...st.ports, ...st.services, ...st.flows, ...st.mirrors].map((x) => x.project_id).filter(Boolean));
  el.hidden = !api.token() || projects.size !== 1;
  el.textContent = projects.size === 1 ? `project ${[...projects][0]}` : '';
}

// showVersion names the running taasd in the top bar (taas/stats'
// taasd_version).
function showVersion(v) {
  const el = $('#version');
  el.hidden = !v;
  if (el.textContent !== `taasd ${v}`) el.textContent = v ? `taasd ${v}` : '';
}

async function refreshStats() {
  const out = await api.stats();
  const cur = (out && out.taas_stats) || null;
  if (!cur) return;
  st.prevStats = st.stats;
  st.stats = cur;
  st.serviceStats = new Map((cur.tap_services || []).map((x) => [x.id, x]));
  st.flowStats = new Map((cur.tap_flows || []).map((x) => [x.id, x]));
  st.mirrorStats = new Map((cur.tap_mirrors || []).map((x) => [x.id, x]));
  st.rates = rates(st.prevStats, cur);
  showVersion(cur.taasd_version);
  recordHistory(st);
  render();
}

function setLive(text, ok) {
  const el = $('#live');
  el.textContent = text;
  el.classList.toggle('bad', !ok);
}

function liveText() {
  if (authWanted) return ['token required', false];
  if (statsFailing) return ['disconnected: retrying', false];
  if (events) return ['live', true];
  return ['live (polling)', true];
}

function showLive() {
  const [text, ok] = liveText();
  setLive(text, ok);
}

export function toast(msg, bad) {
  const t = $('#toast');
  t.textContent = msg;
  t.classList.toggle('bad', Boolean(bad));
  t.classList.add('show');
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.remove('show'), 4000);
}

async function refresh() {
  try {
    await refreshLists();
  } catch (err) {
    if (err.status !== 401) toast(`Could not load resources: ${err.message}`, true);
  }
}

// Server-sent events: any event means something changed (a resource or a
// status), so the lists are fetched again, at most every 200 ms. While the
// stream is down (refused, reconnecting) the lists are polled instead.
function connectEvents() {
  if (typeof EventSource === 'undefined') return;
  if (stream) stream.close();
  stream = null;
  events = false;
  clearTimeout(retryTimer);
  if (authWanted) return; // signing in calls this again
  const t = api.token();
  const es = new EventSource(t ? `/v2.0/taas/events?token=${encodeURIComponent(t)}` : '/v2.0/taas/events');
  stream = es;
  let pending = 0;
  const onEvent = () => {
    if (pending) return;
    pending = setTimeout(() => { pending = 0; refresh(); }, 200);
  };
  es.onopen = () => {
    if (stream !== es) return;
    events = true;
    showLive();
    scheduleLists();
    refresh(); // what changed while the stream was down
  };
  es.onmessage = onEvent;
  es.onerror = () => {
    if (stream !== es) return;
    events = false;
    showLive();
    scheduleLists();
    if (es.readyState === EventSource.CLOSED) {
      // Refused (401, 404): the browser gives up; try again later.
      stream = null;
      retryTimer = setTimeout(connectEvents, 15000);
    }
  };
}

function scheduleLists() {
  clearInterval(listsTimer);
  listsTimer = setInterval(refresh, events ? LISTS_EVERY_MS : 2000);
}

async function statsLoop() {
  try {
    await refreshStats();
    statsFailing = false;
  } catch (err) {
    statsFailing = err.status !== 401;
  }
  showLive();
  setTimeout(statsLoop, STATS_EVERY_MS);
}

function askToken(message) {
  if (authWanted && $('#token-dialog').open) {
    if (message) $('#token-error').textContent = message;
    return;
  }
  authWanted = true;
  showLive();
  $('#token-error').textContent = message || '';
  $('#token-input').value = '';
  $('#token-dialog').showModal();
  $('#token-input').focus();
}

function initAuth() {
  api.setUnauthorizedHandler(() => askToken(api.token() ? 'The appliance did not accept this token.' : ''));
  $('#token-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const t = $('#token-input').value.trim();
    if (!t) {
      $('#token-error').textContent = 'Enter a token.';
      return;
    }
    api.setToken(t);
    try {
      await refreshLists();
    } catch (err) {
      $('#token-error').textContent = err.status === 401 ? 'The appliance did not accept this token.' : err.message;
      return;
    }
    authWanted = false;
    $('#token-dialog').close();
    $('#signout').hidden = false;
    // (Re)connect the stream with the token.
    connectEvents();
    showLive();
    scheduleLists();
    toast('Signed in.');
  });
  $('#token-dialog').addEventListener('cancel', (ev) => ev.preventDefault());
  $('#signout').addEventListener('click', () => {
    api.setToken('');
    location.reload();
  });
  $('#signout').hidden = !api.token();
}

function init() {
  initAuth();
  initManage({ refresh, toast, state: st });
  initCapture();
  window.addEventListener('hashchange', () => { render(); $('#main').focus({ preventScroll: true }); });
  if (!location.hash) history.replaceState(null, '', '#/overview');
  render();
  refresh();
  connectEvents();
  scheduleLists();
  statsLoop();
}

init();
