// Unit tests of the dashboard's pure functions (web/dist/js/model.js), run
// by node's own test runner: `node --test model.test.mjs` (TestModel in
// web/e2e_test.go runs it in make test).

import test from 'node:test';
import assert from 'node:assert/strict';
import { rates, si, bits, sumDrops, errorAttr, label, directionOf, directionsText, snaplenValue, snaplenText, filterText, ifaceKey, onNode } from '../dist/js/model.js';

const snap = (sec, o = {}) => ({
  time_unix_nano: sec * 1e9,
  interfaces: [{ name: 'cap0', rx_packets: o.rx ?? 0, rx_bytes: (o.rx ?? 0) * 100, tx_packets: 0, tx_bytes: 0, drops: o.ifDrops ?? {} }],
  tap_services: [{ id: 's1', delivered_packets: o.del ?? 0, delivered_bytes: (o.del ?? 0) * 64, drops: o.drops ?? {} }],
  tap_flows: [{ id: 'f1', matched_packets: o.m ?? 0, matched_bytes: (o.m ?? 0) * 64, rejected_packets: o.rej ?? 0 }],
  tap_mirrors: [{ id: 'm1', encapsulated_packets: o.enc ?? 0, encapsulated_bytes: (o.enc ?? 0) * 114,
    truncated_packets: o.trunc ?? 0, drops: o.mDrops ?? {} }],
});

test('rates over two snapshots', () => {
  const r = rates(snap(10, { rx: 1000, del: 100, m: 50, drops: { tx_full: 4 } }),
    snap(12, { rx: 3000, del: 500, m: 250, drops: { tx_full: 10, no_frame: 2 } }));
  assert.equal(r.dt, 2);
  assert.equal(r.ifaces.get('cap0').rxPps, 1000);
  assert.equal(r.ifaces.get('cap0').rxBps, 1000 * 100 * 8);
  assert.equal(r.services.get('s1').pps, 200);
  assert.equal(r.services.get('s1').bps, 200 * 64 * 8);
  assert.deepEqual(r.services.get('s1').drops, { tx_full: 3, no_frame: 1 });
  assert.equal(r.services.get('s1').dropPps, 4);
  assert.equal(r.flows.get('f1').pps, 100);
});

test('a fleet\'s interfaces of one name on two nodes keep their own rates', () => {
  const fleet = (sec, a, b) => ({ time_unix_nano: sec * 1e9, node: 'a', interfaces: [
    { name: 'cap0', node: 'a', rx_packets: a, rx_bytes: 0, tx_packets: 0, tx_bytes: 0, drops: {} },
    { name: 'cap0', node: 'b', rx_packets: b, rx_bytes: 0, tx_packets: 0, tx_bytes: 0, drops: {} }] });
  const r = rates(fleet(1, 0, 0), fleet(2, 10, 500));
  assert.equal(r.ifaces.get('a/cap0').rxPps, 10);
  assert.equal(r.ifaces.get('b/cap0').rxPps, 500);
  assert.equal(ifaceKey({ name: 'cap0' }), 'cap0');
  assert.equal(onNode({ node: 'b' }), ' on b');
  assert.equal(onNode({}), '');
  assert.equal(onNode(undefined), '');
});

test('tap mirror rates', () => {
  const r = rates(snap(10, { enc: 100, trunc: 2, mDrops: { mirror_down: 5 } }),
    snap(14, { enc: 900, trunc: 10, mDrops: { mirror_down: 9, tx_ring_full: 4 } }));
  const m = r.mirrors.get('m1');
  assert.equal(m.pps, 200);
  assert.equal(m.bps, 200 * 114 * 8);
  assert.equal(m.truncPps, 2);
  assert.deepEqual(m.drops, { mirror_down: 1, tx_ring_full: 1 });
  assert.equal(m.dropPps, 2);
  assert.equal(rates(null, snap(1)).mirrors.size, 0);
});

test('a counter that went backwards counts as zero', () => {
  const r = rates(snap(10, { del: 500 }), snap(11, { del: 20 }));
  assert.equal(r.services.get('s1').pps, 0);
});

test('no rates without two snapshots, or without time passing', () => {
  assert.equal(rates(null, snap(1)).dt, 0);
  assert.equal(rates(snap(0), snap(0)).services.size, 0); // the null data plane reports time 0
  assert.equal(rates(snap(5), snap(4)).dt, 0);
});

test('something new appears only once it has two snapshots', () => {
  const prev = snap(1);
  const cur = snap(2);
  cur.tap_services.push({ id: 's2', delivered_packets: 9, delivered_bytes: 9, drops: {} });
  assert.equal(rates(prev, cur).services.has('s2'), false);
});

test('si and bits', () => {
  for (const [n, want] of [[0, '0'], [7, '7'], [2.5, '2.5'], [950, '950'], [1000, '1.00 k'], [45_600_000, '45.6 M'], [undefined, '–']]) {
    assert.equal(si(n), want, `si(${n})`);
  }
  assert.equal(bits(950), '950 bit/s');
  assert.equal(bits(1_230_000), '1.23 Mbit/s');
  assert.equal(bits(undefined), '–');
});

test('sumDrops', () => {
  assert.equal(sumDrops({ a: 1, b: 2 }), 3);
  assert.equal(sumDrops(undefined), 0);
});

test('errorAttr finds the field a Neutron message is about', () => {
  const cases = [
    [{ message: "Invalid input for vlan_filter. Reason: '10-20,' is not a valid input." }, 'vlan_filter'],
    [{ message: "Invalid input for binding:profile. Reason: Unexpected keys supplied: x." }, 'binding:profile'],
    [{ message: "Failed to parse request. Required attribute 'direction' not specified" }, 'direction'],
    [{ message: "Unrecognized attribute(s) 'colour, size'" }, 'colour'],
    [{ message: 'Cannot update read-only attribute port_id' }, 'port_id'],
    [{ message: "Attribute 'status' not allowed in POST" }, 'status'],
    [{ type: 'PortNotFound', message: 'Port x could not be found.' }, 'source_port port_id'],
    [{ type: 'TapServiceNotFound', message: 'Tap Service  x does not exist' }, 'tap_service_id'],
    [{ type: 'MacAddressInUse', message: 'The mac address fa:16:3e:00:00:01 is in use.' }, 'mac_address'],
    [{ type: 'TapMirrorTunnelConflict', message: 'Tap Mirror with tunnel_id 101 already exists' }, 'directions'],
    [{ message: 'Invalid input for directions. Reason: tunnel id 5000 of direction OUT must be an integer from 0 to 1023' }, 'directions'],
    [{ type: 'HTTPConflict', message: 'Something else' }, ''],
  ];
  for (const [err, want] of cases) assert.equal(errorAttr(err), want, err.message);
});

test('label', () => {
  assert.equal(label({ name: 'web', id: 'abcdef0123' }), 'web');
  assert.equal(label({ name: '', id: 'abcdef0123' }), 'abcdef01');
  assert.equal(label(undefined), '?');
});

test('directionOf finds the direction a tap mirror error is about', () => {
  const typed = { IN: '101', OUT: '5000', BOTH: 'abc' };
  const cases = [
    ['Invalid input for directions. Reason: tunnel id "5000" of direction OUT must be an integer from 0 to 1023', 'OUT'],
    ['Tap Mirror with tunnel_id 101 already exists', 'IN'],
    ["Invalid input for directions. Reason: 'abc' is not an integer.", 'BOTH'],
    ['Tap Mirror with tunnel_id 7 already exists', ''],
    ['Something else', ''],
  ];
  for (const [message, want] of cases) assert.equal(directionOf({ message }, typed), want, message);
  assert.equal(directionOf({ message: 'Tap Mirror with tunnel_id  already exists' }, { IN: '' }), '', 'an empty field is named by nothing');
});

test('directionsText keeps the order and each id as the API holds it', () => {
  assert.equal(directionsText({ OUT: '7', IN: 5 }), 'OUT "7", IN 5');
  assert.equal(directionsText({}), 'none');
  assert.equal(directionsText(undefined), 'none');
});

test('rejected packets of a filtered flow', () => {
  const r = rates(snap(10, { m: 10, rej: 100 }), snap(12, { m: 20, rej: 500 }));
  assert.equal(r.flows.get('f1').pps, 5);
  assert.equal(r.flows.get('f1').rejectedPps, 200);
});

test('snaplen and filter fields', () => {
  assert.equal(snaplenValue(''), null);
  assert.equal(snaplenValue('  '), null);
  assert.equal(snaplenValue('128'), 128);
  assert.equal(snaplenValue(' 96 '), 96);
  assert.equal(snaplenValue('-1'), -1);
  // Not a whole number: sent as typed, for the API to refuse.
  assert.equal(snaplenValue('1.5'), '1.5');
  assert.equal(snaplenValue('abc'), 'abc');
  assert.equal(snaplenText(null), 'whole frames');
  assert.equal(snaplenText(undefined), 'whole frames');
  assert.equal(snaplenText(128), '128 bytes');
  assert.equal(filterText(null), 'all frames');
  assert.equal(filterText('tcp port 443'), 'tcp port 443');
  assert.equal(errorAttr({ message: "Invalid input for filter. Reason: 'vlan' is refused." }), 'filter');
  assert.equal(errorAttr({ message: "Invalid input for snaplen. Reason: '63' is too small - must be at least '64'." }), 'snaplen');
});

import { portChoices, portUse, pathText, historyToSave, historyRestored } from '../dist/js/model.js';

test('port lists offer the ports that fit the role', () => {
  const port = (id, iface) => ({ id, name: id, 'binding:profile': iface ? { interface: iface } : {} });
  const ports = [port('c', 'cap0'), port('m', 'mon0'), port('u', ''), port('up', 'up0')];
  const ifaces = [{ name: 'cap0', role: 'capture' }, { name: 'mon0', role: 'monitor' }, { name: 'up0', role: 'uplink' }];
  const ids = (l) => l.map((x) => x.id);
  // Admins: by the interfaces' roles; the default (first) fits.
  assert.deepEqual(ids(portChoices('tap_service', ports, ifaces)), ['m', 'u']);
  assert.match(portChoices('tap_service', ports, ifaces)[1].text, /no interface yet/);
  assert.deepEqual(ids(portChoices('tap_flow', ports, ifaces)), ['c']);
  assert.deepEqual(ids(portChoices('tap_mirror', ports, ifaces)), ['c']);
  // Members: no interfaces; ports another role uses go last, marked.
  const used = portUse([{ port_id: 'm' }], [{ source_port: 'c' }], []);
  assert.deepEqual(ids(portChoices('tap_service', ports, [], used)), ['m', 'u', 'up', 'c']);
  assert.match(portChoices('tap_service', ports, [], used)[3].text, /source port/);
  assert.deepEqual(ids(portChoices('tap_flow', ports, [], used)), ['c', 'u', 'up', 'm']);
  assert.deepEqual(ids(portChoices('tap_mirror', ports, undefined, undefined)), ['c', 'm', 'u', 'up']);
});

test('a capture interface shows its data path', () => {
  assert.equal(pathText({ path: 'fast' }), 'fast');
  assert.equal(pathText({ path: 'afxdp', path_reason: 'a tap flow has a filter' }), 'AF_XDP: a tap flow has a filter');
  assert.equal(pathText({ path: 'afxdp' }), 'AF_XDP');
  assert.equal(pathText({ role: 'monitor' }), '');
});

test('chart history survives a reload of the same taasd only', () => {
  const stats = { taasd_started_unix_nano: 77, time_unix_nano: 1000e9 };
  const series = new Map([['s1', { t: [700, 800, 990, 999], delivered: [1, 2, 3, 4], dropped: [0, 0, 1, null] }]]);
  const saved = JSON.parse(JSON.stringify(historyToSave(series, stats)));
  const back = historyRestored(saved, { ...stats, time_unix_nano: 1010e9 }, 300, 300);
  assert.deepEqual(back.get('s1'), { t: [800, 990, 999], delivered: [2, 3, 4], dropped: [0, 1, null] }, 'older than the window is dropped');
  assert.equal(historyRestored(saved, { ...stats, taasd_started_unix_nano: 78 }, 300, 300).size, 0, 'another taasd');
  assert.equal(historyRestored(saved, { ...stats, time_unix_nano: 2000e9 }, 300, 300).size, 0, 'all too old');
  assert.equal(historyRestored(saved, stats, 300, 2).get('s1').t.length, 2, 'bounded');
  for (const bad of [null, 'x', { started: 77 }, { started: 77, services: { s1: { t: [1], delivered: [] } } }]) {
    assert.equal(historyRestored(bad, stats, 300, 300).size, 0);
  }
  const many = new Map(Array.from({ length: 50 }, (_, i) => [`s${i}`, { t: [999], delivered: [1], dropped: [0] }]));
  assert.equal(Object.keys(historyToSave(many, stats).services).length, 20, 'at most 20 services kept');
});
