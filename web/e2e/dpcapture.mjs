// The Capture dialog with the real data plane (TestBrowserDataPlaneCapture,
// as root): a tap service and a flow of the source port on the test's
// capture and monitor veths, no traffic until asked. For the service, then
// the flow: the dialog starts a capture of TAAS_FRAMES packets, the Go
// test injects exactly that many frames from the source port, the dialog
// counts them all and saves the file when the count is reached, and
// tshark reads as many frames, each of the injected size. The Go test then
// checks the files' frames one by one (dpcapture-<path>-<kind>.pcapng in
// the artifacts; TAAS_PATH names the data path).
//
// The Go test owns the network: this script asks it to inject by printing
// "ACTION inject" and waits for "OK" (or "ERR <why>") on stdin.

import assert from 'node:assert/strict';
import readline from 'node:readline';
import { BASE, run, newPage, checkProblems, until, shot, step, api, metric, captureDownload, tsharkFrames } from './lib.mjs';

const captureIface = process.env.TAAS_CAPTURE_IFACE;
const monitorIface = process.env.TAAS_MONITOR_IFACE;
const sourceMAC = process.env.TAAS_SOURCE_MAC;
const frames = Number(process.env.TAAS_FRAMES);
const frameSize = Number(process.env.TAAS_FRAME_SIZE);
const path = process.env.TAAS_PATH || 'fast'; // which data path: names the files
assert.ok(captureIface && monitorIface && sourceMAC && frames > 0 && frameSize > 0,
  'TAAS_CAPTURE_IFACE, TAAS_MONITOR_IFACE, TAAS_SOURCE_MAC, TAAS_FRAMES and TAAS_FRAME_SIZE are set');

const rl = readline.createInterface({ input: process.stdin });
const stdin = rl[Symbol.asyncIterator]();

async function action(name) {
  console.log(`ACTION ${name}`);
  const { value, done } = await stdin.next();
  if (done || value !== 'OK') throw new Error(`ACTION ${name}: ${done ? 'no answer' : value}`);
}

await run(async (browser) => {
  step('ports, a tap service and a flow on the test interfaces');
  const net = (await api('GET', '/v2.0/networks')).networks[0];
  const src = (await api('POST', '/v2.0/ports', { port: {
    name: 'dpc-src', network_id: net.id, mac_address: sourceMAC, 'binding:profile': { interface: captureIface } } })).port;
  const mon = (await api('POST', '/v2.0/ports', { port: {
    name: 'dpc-mon', network_id: net.id, 'binding:profile': { interface: monitorIface } } })).port;
  const ts = (await api('POST', '/v2.0/taas/tap_services', { tap_service: { name: 'dpc-ts', port_id: mon.id } })).tap_service;
  const tf = (await api('POST', '/v2.0/taas/tap_flows', { tap_flow: {
    name: 'dpc-tf', source_port: src.id, tap_service_id: ts.id, direction: 'BOTH' } })).tap_flow;
  await until('the flow ACTIVE', async () => (await api('GET', `/v2.0/taas/tap_flows/${tf.id}`)).tap_flow.status === 'ACTIVE', 30_000);
  const wantPath = path === 'fast' ? 'fast' : 'afxdp';
  await until(`the capture interface on the ${wantPath} path`, async () => {
    const i = (await api('GET', '/v2.0/taas/stats')).taas_stats.interfaces.find((x) => x.name === captureIface);
    if (i.path !== wantPath) throw new Error(`on the ${i.path} path: ${i.path_reason}`);
    return true;
  }, 15_000);

  const page = await newPage(browser);
  await page.goto(`${BASE}/ui/#/manage`);
  const dialog = page.getByRole('dialog', { name: /^Capture / });

  for (const [kind, title, name] of [['service', 'tap service', ts.name], ['flow', 'tap flow', tf.name]]) {
    step(`capture the ${title}: ${frames} frames injected, ${frames} counted and saved`);
    await page.getByRole('button', { name: `Capture ${title} ${name}` }).click();
    await dialog.getByLabel('Seconds').fill('120');
    await dialog.getByLabel('Packets (optional)').fill(String(frames));
    const t0 = Date.now();
    const file = await captureDownload(page, async () => {
      await dialog.getByRole('button', { name: 'Start' }).click();
      await until('the capture running', async () => /^Capturing/.test(await page.locator('#capture-state').innerText()));
      await action('inject');
    }, `dpcapture-${path}-${kind}`);
    metric(`ui_capture_${path}_${kind}_ms`, Date.now() - t0, 'ms');
    const shown = Number(await dialog.locator('[data-field="capture-packets"]').getAttribute('data-value'));
    assert.equal(shown, frames, 'the dialog counted every injected frame');
    const read = tsharkFrames(file);
    assert.equal(read.length, frames, 'tshark reads every frame');
    assert.deepEqual([...new Set(read.map((f) => f.len))], [frameSize], 'each frame whole');
    await shot(page, `dpcapture-${path}-${kind}`);
    await dialog.getByRole('button', { name: 'Close' }).click();
  }
  checkProblems(page);
});
rl.close();
