// The Capture dialog (issue 12), on taasd without a data plane: a Capture
// button on each tap service, flow and mirror row opens the dialog; Start
// streams the capture and the browser downloads a pcapng file that tshark
// reads; Stop ends a long capture early and still saves it; a bad
// parameter shows the API's message next to its field; with 8 captures
// running (the Go test starts them over HTTP) the 9th shows the API's 409
// message; on a phone the dialog fits the screen.
//
// The Go test holds the 8 captures: this script asks by printing
// "ACTION <name>" and waits for "OK" (or "ERR <why>") on stdin.

import assert from 'node:assert/strict';
import readline from 'node:readline';
import path from 'node:path';
import { BASE, ARTIFACTS, PHONE, run, newPage, checkProblems, until, shot, step, api, captureDownload, tsharkFrames } from './lib.mjs';

const rl = readline.createInterface({ input: process.stdin });
const stdin = rl[Symbol.asyncIterator]();

async function action(name) {
  console.log(`ACTION ${name}`);
  const { value, done } = await stdin.next();
  if (done || value !== 'OK') throw new Error(`ACTION ${name}: ${done ? 'no answer' : value}`);
}

await run(async (browser) => {
  const p = `cap-${process.pid}`;
  const net = (await api('GET', '/v2.0/networks')).networks[0];
  const mon = (await api('POST', '/v2.0/ports', { port: { name: `${p}-mon`, network_id: net.id, 'binding:profile': { interface: 'mon7' } } })).port;
  const src = (await api('POST', '/v2.0/ports', { port: { name: `${p}-src`, network_id: net.id, 'binding:profile': { interface: 'cap7' } } })).port;
  const ts = (await api('POST', '/v2.0/taas/tap_services', { tap_service: { name: `${p}-ts`, port_id: mon.id } })).tap_service;
  const tf = (await api('POST', '/v2.0/taas/tap_flows', { tap_flow: {
    name: `${p}-tf`, source_port: src.id, tap_service_id: ts.id, direction: 'BOTH' } })).tap_flow;
  const tm = (await api('POST', '/v2.0/taas/tap_mirrors', { tap_mirror: {
    name: `${p}-tm`, port_id: src.id, directions: { IN: 7 }, remote_ip: '198.51.100.7', mirror_type: 'gre' } })).tap_mirror;

  const page = await newPage(browser);
  await page.goto(`${BASE}/ui/#/manage`);
  const dialog = page.getByRole('dialog', { name: /^Capture / });
  const seconds = dialog.getByLabel('Seconds');
  const packets = dialog.getByLabel('Packets (optional)');
  const error = page.locator('#capture-error');

  step('every tap service, flow and mirror row has a Capture button; ports have none');
  for (const [table, name] of [['tap_services', ts.name], ['tap_flows', tf.name], ['tap_mirrors', tm.name]]) {
    await page.locator(`#${table}-table tbody tr`, { hasText: name }).getByRole('button', { name: /^Capture / }).waitFor();
  }
  assert.equal(await page.locator('#ports-table').getByRole('button', { name: /^Capture / }).count(), 0);

  step('capture a tap service for a second: the download is a pcapng that tshark reads');
  await page.getByRole('button', { name: `Capture tap service ${ts.name}` }).click();
  await dialog.waitFor();
  assert.equal(await seconds.inputValue(), '10', 'ten seconds unless changed');
  await seconds.fill('1');
  const t0 = Date.now();
  const file = await captureDownload(page, () => dialog.getByRole('button', { name: 'Start' }).click(), 'capture-service');
  console.log(`downloaded ${path.basename(file)} after ${Date.now() - t0} ms`);
  const shown = Number(await dialog.locator('[data-field="capture-packets"]').getAttribute('data-value'));
  assert.equal(tsharkFrames(file).length, shown, 'tshark reads as many frames as the dialog counted');
  assert.match(await page.locator('#capture-state').innerText(), /^Saved .+\.pcapng: /);
  assert.ok(Number(await dialog.locator('[data-field="capture-bytes"]').getAttribute('data-value')) > 0, 'bytes counted');
  await shot(page, 'capture-saved');

  step('a bad number of seconds shows the API message next to the field');
  await seconds.fill('0');
  await dialog.getByRole('button', { name: 'Start' }).click();
  await until('the error', async () => (await error.innerText()) !== '');
  assert.match(await error.innerText(), /duration/);
  assert.equal(await seconds.getAttribute('aria-invalid'), 'true');
  await seconds.fill('1');
  assert.equal(await seconds.getAttribute('aria-invalid'), null, 'editing the field clears its mark');
  await dialog.getByRole('button', { name: 'Close' }).click();
  await dialog.waitFor({ state: 'hidden' });

  step('Stop ends a long capture of a tap mirror, and what came is saved');
  await page.getByRole('button', { name: `Capture tap mirror ${tm.name}` }).click();
  await dialog.waitFor();
  assert.equal(await error.innerText(), '', 'a new dialog has no old error');
  await seconds.fill('600');
  const stopped = await captureDownload(page, async () => {
    await dialog.getByRole('button', { name: 'Start' }).click();
    await until('the capture running', async () => /^Capturing/.test(await page.locator('#capture-state').innerText()));
    assert.ok(await dialog.getByRole('button', { name: 'Close' }).isDisabled(), 'no Close while a capture runs');
    await page.keyboard.press('Escape');
    assert.ok(await dialog.isVisible(), 'Escape does not hide a running capture');
    await shot(page, 'capture-running');
    await dialog.getByRole('button', { name: 'Stop' }).click();
  }, 'capture-mirror-stopped');
  tsharkFrames(stopped);
  await dialog.getByRole('button', { name: 'Close' }).click();

  step('with 8 captures running, the 9th shows the API message (409)');
  await action('hold8');
  const direct = await fetch(`${BASE}/v2.0/taas/tap_flows/${tf.id}/capture?duration=1`);
  assert.equal(direct.status, 409);
  const want = (await direct.json()).NeutronError.message;
  await page.getByRole('button', { name: `Capture tap flow ${tf.name}` }).click();
  await seconds.fill('1');
  await dialog.getByRole('button', { name: 'Start' }).click();
  await until('the 409 message', async () => (await error.innerText()) === want);
  console.log(`409 shown: ${want}`);
  assert.equal(await dialog.getByRole('button', { name: 'Start' }).isVisible(), true, 'Start again once refused');
  await shot(page, 'capture-409');

  step('once they end, the flow captures');
  await action('release8');
  await until('a free capture', async () => {
    const r = await fetch(`${BASE}/v2.0/taas/tap_flows/${tf.id}/capture?duration=1&count=1`);
    await r.arrayBuffer();
    return r.status === 200;
  });
  const flowFile = await captureDownload(page, () => dialog.getByRole('button', { name: 'Start' }).click(), 'capture-flow');
  tsharkFrames(flowFile);
  assert.equal(await error.innerText(), '', 'the old error is gone');
  await dialog.getByRole('button', { name: 'Close' }).click();
  checkProblems(page, [/status of 40[09]/]);

  step('on a phone the dialog fits the screen');
  const phone = await newPage(browser, PHONE);
  await phone.goto(`${BASE}/ui/#/manage`);
  await phone.getByRole('button', { name: `Capture tap service ${ts.name}` }).click();
  const box = await phone.getByRole('dialog', { name: /^Capture / }).boundingBox();
  assert.ok(box.x >= 0 && box.x + box.width <= PHONE.width, `dialog ${JSON.stringify(box)} fits ${PHONE.width} px`);
  await shot(phone, 'capture-phone');
  checkProblems(phone);
  console.log(`artifacts in ${ARTIFACTS}`);
});
rl.close();
