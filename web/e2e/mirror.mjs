// Tap mirrors on the dashboard, in token mode (taasd --dataplane none):
// a member creates tap mirrors from the Manage page (port, mirror_type
// erspanv3 and vxlan, remote IP, tunnel ids per direction, snaplen, which
// an edit changes too); the API's
// errors show next to the field, and next to the direction, they are about;
// the API holds the directions as the form sent them; the overview lists
// the project's mirrors with state, reason and counters. An admin sees
// every project's mirrors and deletes one with two clicks; /metrics (an
// admin's) carries their state.

import assert from 'node:assert/strict';
import { BASE, run, newPage, checkProblems, until, shot, step, api, nav } from './lib.mjs';

const tokenA = process.env.TAAS_TOKEN_A;
const tokenB = process.env.TAAS_TOKEN_B;
const tokenAdmin = process.env.TAAS_TOKEN_ADMIN;
const projectA = process.env.TAAS_PROJECT_A;
const projectB = process.env.TAAS_PROJECT_B;
assert.ok(tokenA && tokenB && tokenAdmin && projectA && projectB,
  'TAAS_TOKEN_A, TAAS_TOKEN_B (members of TAAS_PROJECT_A and _B) and TAAS_TOKEN_ADMIN are set');

async function signIn(page, token) {
  const dialog = page.getByRole('dialog', { name: 'Token required' });
  await dialog.getByLabel('Token').fill(token);
  await dialog.getByRole('button', { name: 'Sign in' }).click();
  await dialog.waitFor({ state: 'hidden' });
}

await run(async (browser) => {
  const p = `mir-${process.pid}`;
  step('the admin registers bound ports into both projects');
  const net = (await api('GET', '/v2.0/networks', undefined, tokenAdmin)).networks[0];
  const port = async (name, project, iface) => (await api('POST', '/v2.0/ports', { port: {
    name, network_id: net.id, project_id: project, 'binding:profile': { interface: iface } } }, tokenAdmin)).port;
  const a1 = await port(`${p}-a1`, projectA, 'cap0');
  await port(`${p}-a2`, projectA, 'cap1');
  const b1 = await port(`${p}-b1`, projectB, 'cap0');
  const mB = (await api('POST', '/v2.0/taas/tap_mirrors', { tap_mirror: {
    name: `${p}-mb`, port_id: b1.id, directions: { IN: 9 }, remote_ip: '198.51.100.9', mirror_type: 'gre' } }, tokenB)).tap_mirror;

  const page = await newPage(browser);
  await page.goto(`${BASE}/ui/#/manage`);
  await signIn(page, tokenA);
  const form = page.locator('#tap_mirror-form');
  const row = (name) => page.locator('#tap_mirrors-table tbody tr', { hasText: name });
  await form.getByLabel('Port (whose traffic)').selectOption({ label: `${p}-a1 (cap0)` });

  step('a bad remote IP shows the API message next to its field');
  await form.getByLabel('Name').fill(`${p}-m1`);
  await form.getByLabel('Mirror type').selectOption('erspanv3');
  await form.getByLabel('Remote IP (collector)').fill('198.51.100.300');
  await form.getByLabel('Tunnel id for IN').fill('5');
  await form.getByLabel('Tunnel id for OUT').fill('7');
  await form.getByRole('button', { name: 'Create tap mirror' }).click();
  await until('the remote IP error', async () => /Invalid input for remote_ip/.test(await page.locator('#tm-remote-error').innerText()));
  assert.equal(await form.getByLabel('Remote IP (collector)').getAttribute('aria-invalid'), 'true');

  step('a tunnel id out of its type\'s range shows next to its direction');
  await form.getByLabel('Remote IP (collector)').fill('198.51.100.7');
  await form.getByLabel('Tunnel id for BOTH').fill('5000');
  await form.getByRole('button', { name: 'Create tap mirror' }).click();
  const bothError = page.locator('#tm-both-error');
  await until('the BOTH error', async () => /direction BOTH must be an integer from 0 to 1023/.test(await bothError.innerText()));
  assert.equal(await page.locator('#tm-in-error').innerText(), '', 'the message is not under IN');
  await shot(page, 'mirror-range-error');

  step('the mirror is created with its directions as typed and its snaplen');
  await form.getByLabel('Tunnel id for BOTH').fill('');
  await form.getByLabel('Snaplen (bytes per copy)').fill('96');
  await form.getByRole('button', { name: 'Create tap mirror' }).click();
  await row(`${p}-m1`).waitFor();
  const raw = await (await fetch(`${BASE}/v2.0/taas/tap_mirrors?name=${p}-m1`, { headers: { 'X-Auth-Token': tokenA } })).text();
  assert.ok(raw.includes('"directions":{"IN":"5","OUT":"7"}'), `the API holds the directions as sent: ${raw}`);
  const m1 = JSON.parse(raw).tap_mirrors[0];
  assert.equal(m1.mirror_type, 'erspanv3');
  assert.equal(m1.remote_ip, '198.51.100.7');
  assert.equal(m1.port_id, a1.id);
  assert.equal(m1.snaplen, 96);
  assert.match(await row(`${p}-m1`).innerText(), /IN "5", OUT "7"[\s\S]*96 bytes/);
  await until('the mirror\'s state from taas/stats', async () => {
    const t = await row(`${p}-m1`).locator('[data-status]').innerText();
    return /DOWN/.test(t) && /no data plane/.test(t);
  });

  step('a tunnel id in use: the conflict shows next to that direction');
  await form.getByLabel('Name').fill(`${p}-m2`);
  await form.getByLabel('Port (whose traffic)').selectOption({ label: `${p}-a2 (cap1)` });
  await form.getByLabel('Mirror type').selectOption('vxlan');
  await form.getByLabel('Remote IP (collector)').fill('2001:db8::8');
  await form.getByLabel('Tunnel id for OUT').fill('7');
  await form.getByRole('button', { name: 'Create tap mirror' }).click();
  const outError = page.locator('#tm-out-error');
  await until('the conflict', async () => /Tap Mirror with tunnel_id 7 already exists/.test(await outError.innerText()));
  await form.getByLabel('Tunnel id for OUT').fill('16777215');
  await form.getByRole('button', { name: 'Create tap mirror' }).click();
  await row(`${p}-m2`).waitFor();
  assert.match(await row(`${p}-m2`).innerText(), /vxlan[\s\S]*2001:db8::8[\s\S]*OUT "16777215"[\s\S]*whole frames/);
  await shot(page, 'mirror-manage');

  step("an edit changes the mirror's snaplen; a bad one shows the API message");
  await row(`${p}-m1`).locator('[data-status="DOWN"]').waitFor();
  await row(`${p}-m1`).getByRole('button', { name: `Edit tap mirror ${p}-m1` }).click();
  const mSnaplen = form.getByLabel('Snaplen (bytes per copy)');
  assert.equal(await mSnaplen.inputValue(), '96');
  await mSnaplen.fill('1.5');
  await form.getByRole('button', { name: 'Save' }).click();
  await until('the snaplen error', async () => (await page.locator('#tm-snaplen-error').innerText()) ===
    "Invalid input for snaplen. Reason: '1.5' is not an integer.");
  await mSnaplen.fill('9000');
  await form.getByRole('button', { name: 'Save' }).click();
  await until('the new snaplen listed', async () => /9000 bytes/.test(await row(`${p}-m1`).innerText()));
  assert.equal((await api('GET', `/v2.0/taas/tap_mirrors/${m1.id}`, undefined, tokenA)).tap_mirror.snaplen, 9000);

  step('the overview lists the project\'s mirrors with state, reason and counters');
  await nav(page, 'Overview');
  const ovRow = page.locator(`#mirrors-table tbody tr[data-id="${m1.id}"]`);
  await ovRow.waitFor();
  const ovText = await ovRow.innerText();
  assert.match(ovText, /erspanv3 to 198\.51\.100\.7/);
  assert.match(ovText, /IN "5", OUT "7"/);
  assert.match(ovText, /copies of 9000 bytes/);
  assert.doesNotMatch(ovText, / via /, 'a member sees no uplink');
  await until('the state and the counters', async () => {
    const t = await ovRow.locator('[data-status]').innerText();
    return /DOWN/.test(t) && /no data plane/.test(t)
      && (await ovRow.locator('[data-field="encap-packets"]').getAttribute('data-value')) === '0';
  });
  assert.equal(await page.locator('#mirrors-table tbody tr').count(), 2, "only project A's two mirrors");
  assert.equal(await page.locator(`#mirrors-table tr[data-id="${mB.id}"]`).count(), 0);
  assert.equal(await page.locator('[data-field="mirrors-active"]').innerText(), '0 / 2');
  await shot(page, 'mirror-overview-member');
  // The API answered the bad remote IP and ids with 400 and 409, and the
  // page asked for a token with 401s: Chromium logs them.
  checkProblems(page, [/status of 40[019]/]);

  step('an admin sees every project\'s mirrors and deletes one with two clicks');
  const admin = await newPage(browser);
  await admin.goto(`${BASE}/ui/#/overview`);
  await signIn(admin, tokenAdmin);
  await admin.locator(`#mirrors-table tr[data-id="${mB.id}"]`).waitFor();
  await admin.locator(`#mirrors-table tr[data-id="${m1.id}"]`).waitFor();
  await nav(admin, 'Manage');
  const m2Row = admin.locator('#tap_mirrors-table tbody tr', { hasText: `${p}-m2` });
  // A row is rebuilt when its status changes (an armed Delete with it):
  // wait for the status of taas/stats first.
  await m2Row.locator('[data-status="DOWN"]').waitFor();
  await m2Row.getByRole('button', { name: `Delete tap mirror ${p}-m2` }).click();
  await m2Row.getByRole('button', { name: `Confirm delete tap mirror ${p}-m2` }).click();
  await until('the mirror to leave the list', async () => (await m2Row.count()) === 0);
  const left = (await api('GET', '/v2.0/taas/tap_mirrors', undefined, tokenAdmin)).tap_mirrors.map((m) => m.name);
  assert.ok(!left.includes(`${p}-m2`) && left.includes(`${p}-m1`) && left.includes(`${p}-mb`), `mirrors left: ${left}`);
  await page.locator(`#mirrors-table tbody tr`, { hasText: `${p}-m2` }).waitFor({ state: 'detached' });
  checkProblems(admin, [/status of 401/]);

  step('/metrics carries the mirrors\' state, for an admin');
  const metrics = await (await fetch(`${BASE}/metrics`, { headers: { 'X-Auth-Token': tokenAdmin } })).text();
  for (const id of [m1.id, mB.id]) {
    assert.ok(metrics.includes(`taas_tap_mirror_status{status="DOWN",tap_mirror_id="${id}"} 1`), `/metrics: DOWN of ${id}`);
    assert.ok(metrics.includes(`taas_tap_mirror_status{status="ACTIVE",tap_mirror_id="${id}"} 0`), `/metrics: ACTIVE of ${id}`);
  }
  assert.equal((await fetch(`${BASE}/metrics`, { headers: { 'X-Auth-Token': tokenA } })).status, 403);
});
