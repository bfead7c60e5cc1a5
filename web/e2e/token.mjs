// Token mode: the dashboard asks for a token before showing anything,
// rejects a wrong one, sends the right one on every call, shows only that
// project's resources, stays live (the event stream takes the token as
// ?token=, since EventSource cannot send headers; without EventSource it
// polls), sends it with a capture too (another project's capture is a
// 404), and forgets the token on sign-out.

import assert from 'node:assert/strict';
import { BASE, run, newPage, checkProblems, until, shot, step, api, nav, captureDownload, tsharkFrames } from './lib.mjs';

const tokenA = process.env.TAAS_TOKEN_A;
const tokenB = process.env.TAAS_TOKEN_B;
const projectA = process.env.TAAS_PROJECT_A;
assert.ok(tokenA && tokenB && projectA, 'TAAS_TOKEN_A and TAAS_TOKEN_B are members of two projects; A of TAAS_PROJECT_A');

await run(async (browser) => {
  const p = `tok-${process.pid}`;
  const make = async (tok, who) => {
    const net = (await api('GET', '/v2.0/networks', undefined, tok)).networks[0];
    const port = (await api('POST', '/v2.0/ports', { port: { name: `${p}-${who}-port`, network_id: net.id } }, tok)).port;
    const ts = (await api('POST', '/v2.0/taas/tap_services', { tap_service: { name: `${p}-${who}-ts`, port_id: port.id } }, tok)).tap_service;
    return { port, ts };
  };
  await make(tokenA, 'a');
  await make(tokenB, 'b');

  const page = await newPage(browser);
  await page.goto(`${BASE}/ui/`);

  step('the dashboard asks for a token');
  const dialog = page.getByRole('dialog', { name: 'Token required' });
  await dialog.waitFor();
  assert.equal(await page.locator('article.service').count(), 0, 'nothing shown before a token');
  await shot(page, 'token-dialog');

  step('a wrong token is refused');
  await dialog.getByLabel('Token').fill('not-a-token');
  await dialog.getByRole('button', { name: 'Sign in' }).click();
  await until('the refusal', async () => /did not accept/.test(await page.locator('#token-error').innerText()));
  assert.ok(await dialog.isVisible());

  step("the right token shows that project's resources only");
  await dialog.getByLabel('Token').fill(tokenA);
  await dialog.getByRole('button', { name: 'Sign in' }).click();
  await dialog.waitFor({ state: 'hidden' });
  const cardA = page.locator('article.service', { has: page.getByRole('heading', { name: `${p}-a-ts` }) });
  await cardA.waitFor();
  await nav(page, 'Manage');
  await page.locator('#ports-table tbody tr', { hasText: `${p}-a-port` }).waitFor();
  const body = await page.locator('main').innerText();
  assert.ok(!body.includes(`${p}-b-`), "project B's resources are hidden");
  await until('the event stream', async () => (await page.locator('#live').innerText()) === 'live');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('taas.token')), tokenA);
  assert.equal(await page.locator('#project').innerText(), `project ${projectA}`);

  step('changes made elsewhere appear without a reload (events)');
  const later = await make(tokenA, 'a2');
  await page.locator('#tap_services-table tbody tr', { hasText: `${p}-a2-ts` }).waitFor();
  await make(tokenB, 'b2');
  await page.waitForTimeout(2500); // two polling rounds: B's new service must still not show
  assert.ok(!(await page.locator('main').innerText()).includes(`${p}-b`), "project B's resources are hidden");
  assert.ok(later.ts.id);

  step('what the dashboard creates belongs to the project');
  const tsForm = page.locator('#tap_service-form');
  await tsForm.getByLabel('Name').fill(`${p}-a3-ts`);
  await tsForm.getByLabel('Port (where copies go)').selectOption({ label: `${p}-a-port` });
  await tsForm.getByRole('button', { name: 'Create tap service' }).click();
  await page.locator('#tap_services-table tbody tr', { hasText: `${p}-a3-ts` }).waitFor();
  const seenByB = (await api('GET', '/v2.0/taas/tap_services', undefined, tokenB)).tap_services.map((s) => s.name);
  assert.ok(!seenByB.includes(`${p}-a3-ts`), 'B cannot see what A created');
  const seenByA = (await api('GET', '/v2.0/taas/tap_services', undefined, tokenA)).tap_services.map((s) => s.name);
  assert.ok(seenByA.includes(`${p}-a3-ts`));
  step("a member renames its port: the form leaves the binding, the admin's, alone");
  const portForm = page.locator('#port-form');
  await page.locator('#ports-table tbody tr', { hasText: `${p}-a-port` })
    .getByRole('button', { name: `Edit port ${p}-a-port` }).click();
  await portForm.getByLabel('Name').fill(`${p}-a-port-renamed`);
  await portForm.getByRole('button', { name: 'Save' }).click();
  await page.locator('#ports-table tbody tr', { hasText: `${p}-a-port-renamed` }).waitFor();
  await shot(page, 'token-manage');

  step('a capture sends the token too');
  await page.getByRole('button', { name: `Capture tap service ${p}-a3-ts` }).click();
  const capture = page.getByRole('dialog', { name: /^Capture / });
  await capture.getByLabel('Seconds').fill('1');
  tsharkFrames(await captureDownload(page, () => capture.getByRole('button', { name: 'Start' }).click(), 'token-capture'));
  await capture.getByRole('button', { name: 'Close' }).click();
  const foreign = await fetch(`${BASE}/v2.0/taas/tap_services/${later.ts.id}/capture?duration=1`, { headers: { 'X-Auth-Token': tokenB } });
  assert.equal(foreign.status, 404, "another project's service is not found");

  step('sign out forgets the token');
  await page.getByRole('button', { name: 'Sign out' }).click();
  await dialog.waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('taas.token')), null);

  step('a browser without EventSource polls, and still sees changes');
  const old = await newPage(browser);
  await old.addInitScript(() => { delete window.EventSource; });
  await old.goto(`${BASE}/ui/#/manage`);
  const dlg = old.getByRole('dialog', { name: 'Token required' });
  await dlg.getByLabel('Token').fill(tokenA);
  await dlg.getByRole('button', { name: 'Sign in' }).click();
  await dlg.waitFor({ state: 'hidden' });
  await until('polling', async () => (await old.locator('#live').innerText()) === 'live (polling)');
  await make(tokenA, 'a4');
  await old.locator('#tap_services-table tbody tr', { hasText: `${p}-a4-ts` }).waitFor();
  checkProblems(old, [/status of 401/]);

  // Without a token every API call is a 401, which Chromium logs.
  checkProblems(page, [/status of 401/]);
});
