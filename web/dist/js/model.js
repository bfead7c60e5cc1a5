// Pure functions of the dashboard: rates from two stats snapshots, number
// formatting, and which form field an API error is about. No DOM here.

// rates turns two snapshots of /v2.0/taas/stats (counters that only grow)
// into per-second rates keyed by interface name and service, flow and tap
// mirror id.
// A counter that went backwards (the daemon restarted) counts as 0.
export function rates(prev, cur) {
  const out = { dt: 0, ifaces: new Map(), services: new Map(), flows: new Map(), mirrors: new Map() };
  if (!prev || !cur) return out;
  const dt = (cur.time_unix_nano - prev.time_unix_nano) / 1e9;
  if (!(dt > 0)) return out;
  out.dt = dt;
  const per = (a, b) => (a === undefined || b === undefined || b < a) ? 0 : (b - a) / dt;
  const dropRates = (a = {}, b = {}) => {
    const r = {};
    let total = 0;
    for (const [k, v] of Object.entries(b)) {
      r[k] = per(a[k] ?? 0, v);
      total += r[k];
    }
    return { byReason: r, total };
  };
  const byKey = (arr, key) => new Map((arr || []).map((x) => [x[key], x]));

  const pi = new Map((prev.interfaces || []).map((x) => [ifaceKey(x), x]));
  for (const c of cur.interfaces || []) {
    const p = pi.get(ifaceKey(c));
    if (!p) continue;
    const d = dropRates(p.drops, c.drops);
    out.ifaces.set(ifaceKey(c), {
      rxPps: per(p.rx_packets, c.rx_packets), rxBps: 8 * per(p.rx_bytes, c.rx_bytes),
      txPps: per(p.tx_packets, c.tx_packets), txBps: 8 * per(p.tx_bytes, c.tx_bytes),
      dropPps: d.total, drops: d.byReason,
    });
  }
  const ps = byKey(prev.tap_services, 'id');
  for (const c of cur.tap_services || []) {
    const p = ps.get(c.id);
    if (!p) continue;
    const d = dropRates(p.drops, c.drops);
    out.services.set(c.id, {
      pps: per(p.delivered_packets, c.delivered_packets),
      bps: 8 * per(p.delivered_bytes, c.delivered_bytes),
      dropPps: d.total, drops: d.byReason,
    });
  }
  const pf = byKey(prev.tap_flows, 'id');
  for (const c of cur.tap_flows || []) {
    const p = pf.get(c.id);
    if (!p) continue;
    out.flows.set(c.id, {
      pps: per(p.matched_packets, c.matched_packets),
      bps: 8 * per(p.matched_bytes, c.matched_bytes),
      rejectedPps: per(p.rejected_packets, c.rejected_packets),
    });
  }
  const pm = byKey(prev.tap_mirrors, 'id');
  for (const c of cur.tap_mirrors || []) {
    const p = pm.get(c.id);
    if (!p) continue;
    const d = dropRates(p.drops, c.drops);
    out.mirrors.set(c.id, {
      pps: per(p.encapsulated_packets, c.encapsulated_packets),
      bps: 8 * per(p.encapsulated_bytes, c.encapsulated_bytes),
      truncPps: per(p.truncated_packets, c.truncated_packets),
      dropPps: d.total, drops: d.byReason,
    });
  }
  return out;
}

// ifaceKey names an interface of taas/stats: its name, and in a fleet
// (issue 14) its node's too, since every node may have a cap0.
export function ifaceKey(i) {
  return i.node ? `${i.node}/${i.name}` : i.name;
}

// onNode is " on NODE" for a taas/stats entry of a fleet, "" otherwise.
export function onNode(entry) {
  return entry && entry.node ? ` on ${entry.node}` : '';
}

const SI = ['', 'k', 'M', 'G', 'T'];

// si formats a non-negative number with an SI prefix and three significant
// digits: 0, 950, 1.23 k, 45.6 M.
export function si(n) {
  if (n === undefined || n === null || Number.isNaN(n)) return '–';
  if (n < 1000) return n >= 10 || Number.isInteger(n) ? String(Math.round(n)) : n.toFixed(1);
  let i = 0;
  while (n >= 1000 && i < SI.length - 1) { n /= 1000; i++; }
  return `${n.toPrecision(3)} ${SI[i]}`;
}

// bits formats a bit rate: 950 bit/s, 1.23 Mbit/s.
export function bits(n) {
  if (n === undefined) return '–';
  const s = si(n);
  return /\d$/.test(s) ? `${s} bit/s` : `${s}bit/s`;
}

// sumDrops adds the counters of a drops-by-reason map.
export function sumDrops(drops) {
  return Object.values(drops || {}).reduce((a, b) => a + b, 0);
}

// errorAttr says which request attribute a Neutron error message is about,
// so the form can show it next to that field; '' when it names none.
export function errorAttr(err) {
  const msg = err.message || '';
  const patterns = [
    /Invalid input for ([\w:]+)\. Reason:/,
    /Required attribute '([^']+)' not specified/,
    /Unrecognized attribute\(s\) '([^',]+)/,
    /Cannot update read-only attribute ([\w:]+)/,
    /Attribute '([^']+)' not allowed in (?:POST|PUT)/,
  ];
  for (const re of patterns) {
    const m = msg.match(re);
    if (m) return m[1];
  }
  const byType = {
    PortNotFound: ['source_port', 'port_id'],
    TapServiceNotFound: ['tap_service_id'],
    NetworkNotFound: ['network_id'],
    MacAddressInUse: ['mac_address'],
    PortDoesNotBelongToTenant: ['port_id'],
    TapServiceNotBelongToTenant: ['tap_service_id'],
    TapMirrorTunnelConflict: ['directions'],
  };
  return (byType[err.type] || []).join(' ');
}

// DIRECTIONS are a tap mirror's direction keys, in the order its form
// sends them.
export const DIRECTIONS = ['IN', 'OUT', 'BOTH'];

// directionOf says which direction of a tap mirror's directions an API
// error is about: the one its message names ("tunnel id 5000 of direction
// OUT ..."), else the one whose id (typed) is the id a conflict names
// ("Tap Mirror with tunnel_id 101 already exists") or the value a message
// quotes ("'abc' is not an integer"); '' when none.
export function directionOf(err, typed) {
  const msg = err.message || '';
  const named = msg.match(/\bdirection (IN|OUT|BOTH)\b/);
  if (named) return named[1];
  const given = DIRECTIONS.filter((d) => typed[d] !== undefined && typed[d] !== '');
  const conflict = msg.match(/tunnel_id (.*) already exists/);
  if (conflict) return given.find((d) => typed[d] === conflict[1]) || '';
  // "Reason: 'abc' is not an integer."
  return given.find((d) => msg.includes(`'${typed[d]}'`)) || '';
}

// directionsText shows a tap mirror's directions as the API holds them,
// keys in its order and each id as sent: IN 101, OUT "102".
export function directionsText(dirs) {
  const parts = Object.entries(dirs || {}).map(([k, v]) => `${k} ${JSON.stringify(v)}`);
  return parts.length ? parts.join(', ') : 'none';
}

// snaplenValue is what a snaplen field sends: a whole number as typed
// becomes a JSON number (the API takes no string), anything else goes as
// typed for the API to refuse with its message; empty is null.
export function snaplenValue(typed) {
  const t = typed.trim();
  if (t === '') return null;
  return /^-?\d+$/.test(t) ? Number(t) : typed;
}

// snaplenText shows a snaplen: the bytes kept of each copy, or "whole
// frames" for null.
export const snaplenText = (n) => (n === null || n === undefined ? 'whole frames' : `${n} bytes`);

// filterText shows a tap flow's filter, "all frames" for null.
export const filterText = (f) => (f === null || f === undefined ? 'all frames' : f);

// shortID is enough of a UUID to tell resources apart on screen.
export const shortID = (id) => (id || '').slice(0, 8);

// label names a resource for people: its name, else the start of its id.
export const label = (r) => (r && r.name) || shortID(r && r.id) || '?';

// bytesText formats a byte count: 950 B, 1.23 MB.
export function bytesText(n) {
  const s = si(n);
  return /\d$/.test(s) ? `${s} B` : `${s}B`;
}

// CAPTURE_PARAMS are the query parameters of a live capture, in the order
// the Capture dialog sends them.
export const CAPTURE_PARAMS = ['duration', 'count', 'snaplen'];

// captureQuery is the query string of a live capture: each parameter as
// typed (the API owns their ranges and says what is wrong), left out when
// empty; '' for none.
export function captureQuery(params) {
  const q = new URLSearchParams();
  for (const k of CAPTURE_PARAMS) {
    const v = String(params[k] ?? '').trim();
    if (v !== '') q.set(k, v);
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

// captureParam says which capture parameter an API error is about ('' for
// none), so the dialog can mark that field.
export function captureParam(err) {
  if (err.status !== 400) return ''; // a 409's message names duration and count too
  const m = (err.message || '').match(/\b(duration|count|snaplen)\b/);
  return m ? m[1] : '';
}

// fileName is the name a Content-Disposition header gives a download: its
// filename* (RFC 8187, UTF-8) first, then its filename, without any
// directory part; fallback when it names none.
export function fileName(disposition, fallback) {
  const d = disposition || '';
  let name = '';
  const star = d.match(/filename\*\s*=\s*utf-8''([^;\s]+)/i);
  if (star) {
    try { name = decodeURIComponent(star[1]); } catch { name = ''; }
  }
  if (!name) {
    const quoted = d.match(/filename\s*=\s*"((?:[^"\\]|\\.)*)"/i);
    const token = d.match(/filename\s*=\s*([^";\s]+)/i);
    if (quoted) name = quoted[1].replace(/\\(.)/g, '$1');
    else if (token) name = token[1];
  }
  name = name.split(/[\\/]/).pop().trim();
  return name && name !== '.' && name !== '..' ? name : fallback;
}

// PORT_ROLES say which interface role fits each port list of the manage
// forms (issue 13): copies go to a monitor, tap flows and tap mirrors take
// a capture interface's traffic.
export const PORT_ROLES = { tap_service: 'monitor', tap_flow: 'capture', tap_mirror: 'capture' };

const ifaceOf = (p) => (p && p['binding:profile'] && p['binding:profile'].interface) || '';

// portChoices is the port list of one form (kind a key of PORT_ROLES),
// fitting ports first: [{id, text}], the default (the first) fitting.
// ifaces are taas/stats' interfaces (name, role): an admin's. With them,
// a port fits when its interface has the role; a tap service also offers
// unbound ports, last and marked, since binding one later is the usual
// order. Members see no interfaces, so the list is ordered by what the
// resources they see tell: a port that is a tap service's is a monitor's,
// one that is a tap flow's source or a tap mirror's port is a capture's;
// such ports of the other role go last, marked, and nothing is hidden.
export function portChoices(kind, ports, ifaces, used) {
  const want = PORT_ROLES[kind];
  const text = (p) => `${label(p)}${ifaceOf(p) ? ` (${ifaceOf(p)})` : ''}`;
  if (ifaces && ifaces.length) {
    const role = new Map(ifaces.map((i) => [i.name, i.role]));
    const fit = ports.filter((p) => role.get(ifaceOf(p)) === want).map((p) => ({ id: p.id, text: text(p) }));
    if (kind !== 'tap_service') return fit;
    const unbound = ports.filter((p) => !ifaceOf(p)).map((p) => ({ id: p.id, text: `${label(p)} (no interface yet)` }));
    return [...fit, ...unbound];
  }
  const other = want === 'monitor' ? (used && used.capture) : (used && used.monitor);
  const first = [];
  const last = [];
  for (const p of ports) {
    if (other && other.has(p.id)) last.push({ id: p.id, text: `${text(p)} (a ${want === 'monitor' ? 'source' : 'tap service\'s'} port)` });
    else first.push({ id: p.id, text: text(p) });
  }
  return [...first, ...last];
}

// portUse is what a member can tell of its ports' roles: the ports of its
// tap services (monitor) and the sources of its tap flows and mirrors
// (capture), as sets of port ids for portChoices.
export function portUse(services, flows, mirrors) {
  return {
    monitor: new Set(services.map((s) => s.port_id)),
    capture: new Set([...flows.map((f) => f.source_port), ...mirrors.map((m) => m.port_id)]),
  };
}

// pathText shows a capture interface's data path: "fast" (decided and
// copied in XDP) or "AF_XDP" with the reason it is not fast; '' for
// interfaces without one (monitors, uplinks).
export function pathText(i) {
  if (!i || !i.path) return '';
  if (i.path === 'fast') return 'fast';
  const name = i.path === 'afxdp' ? 'AF_XDP' : i.path;
  return i.path_reason ? `${name}: ${i.path_reason}` : name;
}

// HISTORY_SERVICES bounds how many tap services' chart histories a page
// keeps across a reload (sessionStorage is small: at most 300 samples of
// 3 numbers each, some 200 kB in all).
export const HISTORY_SERVICES = 20;

// historyToSave is what the overview keeps in sessionStorage so that a
// reload keeps the rate charts (issue 13): the taasd run it came from and
// each service's samples (series: id -> {t, delivered, dropped}).
export function historyToSave(series, stats) {
  const services = {};
  for (const [id, c] of [...series].slice(0, HISTORY_SERVICES)) {
    services[id] = { t: c.t, delivered: c.delivered, dropped: c.dropped };
  }
  return { started: stats.taasd_started_unix_nano || 0, services };
}

// historyRestored turns what historyToSave kept (parsed JSON, or anything
// else) back into series for the first snapshot stats: nothing when it is
// from another run of taasd (another start time: the counters started
// again), or malformed; each series without its samples older than
// windowSec before the snapshot, and without a series left empty.
export function historyRestored(saved, stats, windowSec, maxPoints) {
  const out = new Map();
  if (!saved || typeof saved !== 'object' || !stats || !stats.taasd_started_unix_nano ||
    saved.started !== stats.taasd_started_unix_nano || typeof saved.services !== 'object' || !saved.services) return out;
  const now = stats.time_unix_nano / 1e9;
  const nums = (a, n) => Array.isArray(a) && a.length === n && a.every((v) => v === null || typeof v === 'number');
  for (const [id, c] of Object.entries(saved.services).slice(0, HISTORY_SERVICES)) {
    if (!c || !Array.isArray(c.t)) continue;
    const n = c.t.length;
    if (!nums(c.t, n) || !nums(c.delivered, n) || !nums(c.dropped, n)) continue;
    let from = c.t.findIndex((t) => t !== null && t >= now - windowSec && t <= now);
    if (from < 0) continue;
    from = Math.max(from, n - maxPoints);
    out.set(id, { t: c.t.slice(from), delivered: c.delivered.slice(from), dropped: c.dropped.slice(from) });
  }
  return out;
}
