// The dashboard with the real data plane (TestBrowserDataPlane, as root):
// frames flow into the capture interface from the test's namespace; the
// flow turns ACTIVE and its counters rise on the page; the test takes the
// monitor link down and the flow and its service turn DOWN, with the
// reason, without a reload; the link comes back and so does ACTIVE. A tap
// mirror of the source port to a collector behind the uplink turns ACTIVE,
// names its uplink and counts its copies; the test takes the uplink down
// and the mirror turns DOWN with the reason, then ACTIVE again. A second
// flow with a filter (even sequence numbers) shows its filter, and both
// its matched and its rejected packets rise.
//
// The Go test owns the network: this script asks it to act by printing
// "ACTION <name>" and waits for "OK" (or "ERR <why>") on stdin.

import assert from 'node:assert/strict';
import readline from 'node:readline';
import { BASE, run, newPage, checkProblems, until, shot, step, api, metric } from './lib.mjs';

const captureIface = process.env.TAAS_CAPTURE_IFACE;
const monitorIface = process.env.TAAS_MONITOR_IFACE;
const sourceMAC = process.env.TAAS_SOURCE_MAC;
const uplinkIface = process.env.TAAS_UPLINK_IFACE;
const remoteIP = process.env.TAAS_REMOTE_IP;
assert.ok(captureIface && monitorIface && sourceMAC && uplinkIface && remoteIP,
  'TAAS_CAPTURE_IFACE, TAAS_MONITOR_IFACE, TAAS_SOURCE_MAC, TAAS_UPLINK_IFACE and TAAS_REMOTE_IP are set');

const rl = readline.createInterface({ input: process.stdin });
const stdin = rl[Symbol.asyncIterator]();

async function action(name) {
  console.log(`ACTION ${name}`);
  const { value, done } = await stdin.next();
  if (done || value !== 'OK') throw new Error(`ACTION ${name}: ${done ? 'no answer' : value}`);
}

// value reads the raw number behind a formatted one (data-value), or NaN.
async function value(locator) {
  const v = await locator.getAttribute('data-value');
  return v === null ? NaN : Number(v);
}

await run(async (browser) => {
  step('ports, a tap service and a flow on the test interfaces');
  const net = (await api('GET', '/v2.0/networks')).networks[0];
  const src = (await api('POST', '/v2.0/ports', { port: {
    name: 'dp-src', network_id: net.id, mac_address: sourceMAC, 'binding:profile': { interface: captureIface } } })).port;
  const mon = (await api('POST', '/v2.0/ports', { port: {
    name: 'dp-mon', network_id: net.id, 'binding:profile': { interface: monitorIface } } })).port;
  const ts = (await api('POST', '/v2.0/taas/tap_services', { tap_service: { name: 'dp-ts', port_id: mon.id } })).tap_service;
  const tf = (await api('POST', '/v2.0/taas/tap_flows', { tap_flow: {
    name: 'dp-tf', source_port: src.id, tap_service_id: ts.id, direction: 'BOTH' } })).tap_flow;

  const page = await newPage(browser);
  await page.goto(`${BASE}/ui/#/overview`);
  const card = page.locator(`article.service[data-id="${ts.id}"]`);
  const flowRow = card.locator(`tr[data-id="${tf.id}"]`);
  const flowStatus = flowRow.locator('[data-status]');
  const svcStatus = card.locator('.card-head [data-status]');

  step('the flow is realised');
  await until('the flow ACTIVE on the page', async () => (await flowStatus.getAttribute('data-status')) === 'ACTIVE', 30_000);
  assert.equal(await svcStatus.getAttribute('data-status'), 'ACTIVE');

  step('with frames flowing, the counters rise');
  const matched = flowRow.locator('[data-field="matched-packets"]');
  const first = await until('matched packets', async () => { const v = await value(matched); return v > 0 && v; });
  await until('matched packets to rise', async () => (await value(matched)) > first);
  await until('a matched rate', async () => (await value(flowRow.locator('[data-field="matched-pps"]'))) > 0);
  const delivered = card.locator('[data-field="delivered-packets"]');
  const d1 = await until('delivered packets', async () => { const v = await value(delivered); return v > 0 && v; });
  await until('delivered packets to rise', async () => (await value(delivered)) > d1);
  await until('a delivered rate', async () => (await value(card.locator('[data-field="delivered-pps"]'))) > 0);
  const capRow = page.locator(`#ifaces-table tr[data-iface="${captureIface}"]`);
  const monRow = page.locator(`#ifaces-table tr[data-iface="${monitorIface}"]`);
  await until('an RX rate on the capture interface', async () => (await value(capRow.locator('[data-field="rx-pps"]'))) > 0);
  assert.equal(await monRow.locator('[data-field="link"]').innerText(), 'UP');
  metric('ui_matched_pps', await value(flowRow.locator('[data-field="matched-pps"]')), 'pkt/s');
  await page.waitForTimeout(3000); // a few seconds of chart
  await shot(page, 'dataplane-flowing');

  step('the capture interface shows its data path, the top bar taasd\'s version');
  const pathCell = capRow.locator('[data-field="path"]');
  await until('a data path', async () => /^(fast|AF_XDP)/.test(await pathCell.innerText()));
  const ifaceStats = (await api('GET', '/v2.0/taas/stats')).taas_stats;
  const capStats = ifaceStats.interfaces.find((i) => i.name === captureIface);
  assert.equal(await pathCell.getAttribute('data-value'), capStats.path);
  if (capStats.path !== 'fast') assert.equal(await pathCell.innerText(), `AF_XDP: ${capStats.path_reason}`);
  await page.waitForTimeout(2000);
  const later = (await api('GET', '/v2.0/taas/stats')).taas_stats;
  const d = (name, k) => later.interfaces.find((i) => i.name === name)[k] - ifaceStats.interfaces.find((i) => i.name === name)[k];
  // Every injected frame has the same size: the capture's RX and the
  // monitor's TX count the same bytes for each (issue 13), in the API and
  // as bit/s on the page.
  const capPerFrame = d(captureIface, 'rx_bytes') / d(captureIface, 'rx_packets');
  const monPerFrame = d(monitorIface, 'tx_bytes') / d(monitorIface, 'tx_packets');
  console.log(`bytes per frame over 2 s: capture rx ${capPerFrame} (${d(captureIface, 'rx_packets')} frames), ` +
    `monitor tx ${monPerFrame} (${d(monitorIface, 'tx_packets')} frames)`);
  assert.equal(capPerFrame, monPerFrame, 'capture RX and monitor TX bytes per frame');
  // Both figures of a row in one read: the table is rebuilt every second.
  const bitsPerFrame = (row, dir) => row.evaluate((tr, dir) => {
    const v = (f) => Number(tr.querySelector(`[data-field="${dir}-${f}"]`).dataset.value);
    return v('bps') / v('pps');
  }, dir);
  const pageBits = await until('bit/s and pkt/s on both rows', async () => {
    const rx = await bitsPerFrame(capRow, 'rx');
    const tx = await bitsPerFrame(monRow, 'tx');
    return rx > 0 && tx > 0 && { rx, tx };
  });
  console.log(`bits per frame on the page: capture RX ${pageBits.rx}, monitor TX ${pageBits.tx}`);
  assert.equal(Math.round(pageBits.rx), 8 * capPerFrame, 'capture RX bit/s over pkt/s on the page');
  assert.equal(Math.round(pageBits.tx), 8 * capPerFrame, 'monitor TX bit/s over pkt/s on the page');
  assert.equal(await monRow.locator('[data-field="path"]').innerText(), '–', 'a monitor has no data path');
  console.log(`data path shown: ${await pathCell.innerText()}`);
  assert.ok(ifaceStats.taasd_version, 'taas/stats names the version');
  assert.equal(await page.locator('#version').innerText(), `taasd ${ifaceStats.taasd_version}`);

  step('a reload keeps the chart\'s samples');
  const chart = card.locator('[data-field="chart"]');
  const before = { n: Number(await chart.getAttribute('data-samples')), first: await chart.getAttribute('data-first') };
  assert.ok(before.n >= 3, `samples before the reload: ${before.n}`);
  await page.reload();
  await until('the chart after the reload', async () => (await chart.getAttribute('data-samples')) !== null);
  const after = { n: Number(await chart.getAttribute('data-samples')), first: await chart.getAttribute('data-first') };
  console.log(`chart samples before the reload ${before.n} (first ${before.first}), after ${after.n} (first ${after.first})`);
  assert.equal(after.first, before.first, 'the oldest sample survived the reload');
  assert.ok(after.n >= before.n, "the samples from before the reload are there");

  step('the port lists offer the ports that fit');
  const free = (await api('POST', '/v2.0/ports', { port: { name: 'dp-free', network_id: net.id } })).port;
  await page.goto(`${BASE}/ui/#/manage`);
  const optionsOf = (sel) => page.locator(sel).evaluate((el) => ({ value: el.value, opts: [...el.options].map((o) => [o.value, o.textContent]) }));
  await until('the unbound port listed', async () => (await optionsOf('#ts-port')).opts.some(([v]) => v === free.id));
  const tsPort = await optionsOf('#ts-port');
  assert.equal(tsPort.value, mon.id, 'a tap service goes to the monitor port by default');
  assert.deepEqual(tsPort.opts.map(([v]) => v), [mon.id, free.id], 'monitor ports, then unbound ones: not the capture port');
  assert.match(tsPort.opts[1][1], /no interface yet/);
  for (const sel of ['#tf-source', '#tm-port']) {
    const o = await optionsOf(sel);
    assert.equal(o.value, src.id, `${sel}: the capture port by default`);
    assert.deepEqual(o.opts.map(([v]) => v), [src.id], `${sel}: ports on capture interfaces only`);
  }
  await shot(page, 'dataplane-port-lists');
  await api('DELETE', `/v2.0/ports/${free.id}`);
  await page.goto(`${BASE}/ui/#/overview`);

  step('a flow with a filter: it matches half the frames and rejects the rest');
  // The test's frames carry their sequence number at offset 22 (after the
  // 8-byte marker), where the filter sees it however the frame is tagged.
  const expr = 'ether proto 0x88b5 and ether[22:4] & 1 = 0';
  const even = (await api('POST', '/v2.0/taas/tap_flows', { tap_flow: {
    name: 'dp-even', source_port: src.id, tap_service_id: ts.id, direction: 'OUT', filter: expr } })).tap_flow;
  const evenRow = card.locator(`tr[data-id="${even.id}"]`);
  await until('the filtered flow ACTIVE', async () => (await evenRow.locator('[data-status]').getAttribute('data-status')) === 'ACTIVE', 30_000);
  assert.equal(await evenRow.locator('[data-field="filter"]').innerText(), expr);
  const evenMatched = evenRow.locator('[data-field="matched-packets"]');
  const rejected = evenRow.locator('[data-field="rejected-packets"]');
  const r1 = await until('rejected packets', async () => { const v = await value(rejected); return v > 0 && v; });
  await until('rejected packets to rise', async () => (await value(rejected)) > r1);
  await until('a rejected rate', async () => (await value(evenRow.locator('[data-field="rejected-pps"]'))) > 0);
  await until('matched packets of the filtered flow', async () => (await value(evenMatched)) > 0);
  assert.equal(await value(flowRow.locator('[data-field="rejected-packets"]')), 0, 'a flow without a filter rejects nothing');
  const scrapedFlows = await (await fetch(`${BASE}/metrics`)).text();
  const rej = scrapedFlows.match(new RegExp(`^taas_tap_flow_rejected_packets_total\\{tap_flow_id="${even.id}"[^}]*\\} (\\S+)$`, 'm'));
  assert.ok(rej && Number(rej[1]) > 0, `/metrics counts the rejected frames: ${rej}`);
  await shot(page, 'dataplane-filter');

  step('the monitor link goes down: the flow turns DOWN without a reload');
  const navigations = [];
  page.on('framenavigated', (f) => { if (f === page.mainFrame()) navigations.push(f.url()); });
  await action('link-down');
  const t0 = Date.now();
  await until('the flow DOWN on the page', async () => (await flowStatus.getAttribute('data-status')) === 'DOWN');
  metric('ui_status_down_latency_ms', Date.now() - t0, 'ms');
  await until('the service DOWN on the page', async () => (await svcStatus.getAttribute('data-status')) === 'DOWN');
  const reason = await flowRow.locator('.reason').innerText();
  assert.match(reason, new RegExp(monitorIface), 'a DOWN flow says why');
  await until('the monitor link DOWN on the page', async () => (await monRow.locator('[data-field="link"]').innerText()) === 'DOWN');
  assert.deepEqual(navigations, [], 'the page did not reload');
  console.log(`reason shown: ${reason}`);
  await shot(page, 'dataplane-link-down');

  step('the link comes back: ACTIVE again');
  await action('link-up');
  const t1 = Date.now();
  await until('the flow ACTIVE again', async () => (await flowStatus.getAttribute('data-status')) === 'ACTIVE', 30_000);
  metric('ui_status_up_latency_ms', Date.now() - t1, 'ms');

  step('a tap mirror to the collector: ACTIVE through the uplink, its counters rise');
  const mirror = (await api('POST', '/v2.0/taas/tap_mirrors', { tap_mirror: {
    name: 'dp-mirror', port_id: src.id, directions: { OUT: 101 }, remote_ip: remoteIP, mirror_type: 'gre' } })).tap_mirror;
  const mRow = page.locator(`#mirrors-table tr[data-id="${mirror.id}"]`);
  const mStatus = mRow.locator('[data-status]');
  await until('the mirror ACTIVE on the page', async () => (await mStatus.getAttribute('data-status')) === 'ACTIVE', 30_000);
  await until('the uplink named (an admin\'s view)', async () =>
    (await mRow.locator('[data-field="tunnel"]').innerText()) === `gre to ${remoteIP} via ${uplinkIface}`);
  const encap = mRow.locator('[data-field="encap-packets"]');
  const e1 = await until('encapsulated packets', async () => { const v = await value(encap); return v > 0 && v; });
  await until('encapsulated packets to rise', async () => (await value(encap)) > e1);
  await until('an encapsulated rate', async () => (await value(mRow.locator('[data-field="encap-pps"]'))) > 0);
  metric('ui_encap_pps', await value(mRow.locator('[data-field="encap-pps"]')), 'pkt/s');
  const scraped = await (await fetch(`${BASE}/metrics`)).text();
  const series = scraped.match(new RegExp(`^taas_tap_mirror_encapsulated_packets_total\\{tap_mirror_id="${mirror.id}"[^}]*\\} (\\S+)$`, 'm'));
  assert.ok(series && Number(series[1]) > 0, `/metrics counts the mirror's copies: ${series}`);
  assert.match(scraped, new RegExp(`^taas_tap_mirror_status\\{status="ACTIVE",tap_mirror_id="${mirror.id}"[^}]*\\} 1$`, 'm'),
    '/metrics: the mirror ACTIVE');
  await shot(page, 'dataplane-mirror');

  step('the uplink goes down: the mirror turns DOWN with the reason, without a reload');
  await action('uplink-down');
  const t2 = Date.now();
  await until('the mirror DOWN on the page', async () => (await mStatus.getAttribute('data-status')) === 'DOWN');
  metric('ui_mirror_down_latency_ms', Date.now() - t2, 'ms');
  const mReason = await mRow.locator('.reason').innerText();
  assert.match(mReason, new RegExp(uplinkIface), 'a DOWN mirror says why');
  console.log(`mirror reason shown: ${mReason}`);
  assert.deepEqual(navigations, [], 'the page did not reload');
  await shot(page, 'dataplane-mirror-down');

  step('the uplink comes back: the mirror is ACTIVE again');
  await action('uplink-up');
  const t3 = Date.now();
  await until('the mirror ACTIVE again', async () => (await mStatus.getAttribute('data-status')) === 'ACTIVE', 30_000);
  metric('ui_mirror_up_latency_ms', Date.now() - t3, 'ms');

  checkProblems(page);
});
rl.close();
