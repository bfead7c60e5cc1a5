// Manage through the dashboard: a browser asking for / lands on it; create
// two ports (with interface bindings), a tap service (with a snaplen) and a
// tap flow (with a filter), and see them listed; a bad VLAN filter, filter
// or snaplen shows the API's message next to the field; rename, change the
// snaplen and delete; then check through the API that what the forms sent
// is what the user typed.

import assert from 'node:assert/strict';
import { BASE, run, newPage, checkProblems, until, shot, step, api, nav, metric } from './lib.mjs';

await run(async (browser) => {
  const page = await newPage(browser);
  const p = `e2e-${process.pid}`; // names unique to this run
  const mac = `fa:16:3e:${(process.pid & 0xffffff).toString(16).padStart(6, '0').match(/../g).join(':')}`;

  step('a browser asking for / is sent to the dashboard');
  let bytes = 0;
  page.on('response', async (r) => {
    if (r.url().includes('/ui/')) bytes += (await r.body().catch(() => Buffer.alloc(0))).length;
  });
  const t0 = Date.now();
  await page.goto(`${BASE}/`);
  await until('the overview', async () => page.url().endsWith('/ui/#/overview'));
  await page.getByRole('heading', { name: 'Interfaces' }).waitFor();
  await page.locator('body[data-loaded]').waitFor({ state: 'attached' }); // the lists are in
  metric('ui_first_load_ms', Date.now() - t0, 'ms');
  metric('ui_asset_bytes', bytes, 'bytes');

  step('create ports with interface bindings');
  await nav(page, 'Manage');
  const portForm = page.locator('#port-form');
  const portRow = (name) => page.locator('#ports-table tbody tr', { hasText: name });
  await portForm.getByLabel('Name').fill(`${p}-mon`);
  await portForm.getByLabel('Interface').fill('mon0');
  await portForm.getByRole('button', { name: 'Create port' }).click();
  await portRow(`${p}-mon`).waitFor();
  assert.match(await portRow(`${p}-mon`).innerText(), /mon0/);

  await portForm.getByLabel('Name').fill(`${p}-src`);
  await portForm.getByLabel('MAC address').fill(mac);
  await portForm.getByLabel('Interface').fill('cap0');
  await portForm.getByRole('button', { name: 'Create port' }).click();
  await portRow(`${p}-src`).waitFor();
  assert.match(await portRow(`${p}-src`).innerText(), new RegExp(`cap0[\\s\\S]*${mac}`));

  step('a bad MAC address shows the API message next to its field');
  await portForm.getByLabel('Name').fill(`${p}-badmac`);
  await portForm.getByLabel('MAC address').fill('not-a-mac');
  await portForm.getByRole('button', { name: 'Create port' }).click();
  const macError = page.locator('#port-mac-error');
  await until('the MAC address error', async () => /mac_address/.test(await macError.innerText()));
  assert.equal(await portForm.getByLabel('MAC address').getAttribute('aria-invalid'), 'true');
  await portForm.getByLabel('MAC address').fill('');
  assert.equal(await macError.innerText(), '', 'editing the field clears its error');
  assert.equal(await portForm.getByLabel('MAC address').getAttribute('aria-invalid'), null);
  await portForm.getByLabel('Name').fill('');

  step('a snaplen out of range shows the API message next to its field');
  const tsForm = page.locator('#tap_service-form');
  const snaplen = tsForm.getByLabel('Snaplen (bytes per copy)');
  await tsForm.getByLabel('Name').fill(`${p}-ts`);
  await tsForm.getByLabel('Description').fill('copies to the sensor');
  await tsForm.getByLabel('Port (where copies go)').selectOption({ label: `${p}-mon (mon0)` });
  await snaplen.fill('63');
  await tsForm.getByRole('button', { name: 'Create tap service' }).click();
  const snaplenError = page.locator('#ts-snaplen-error');
  await until('the snaplen error', async () => (await snaplenError.innerText()) ===
    "Invalid input for snaplen. Reason: '63' is too small - must be at least '64'.");
  assert.equal(await snaplen.getAttribute('aria-invalid'), 'true');

  step('create a tap service on the monitor port, copies cut to 128 bytes');
  await snaplen.fill('128');
  await tsForm.getByRole('button', { name: 'Create tap service' }).click();
  const tsRow = page.locator('#tap_services-table tbody tr', { hasText: `${p}-ts` });
  await tsRow.waitFor();
  assert.match(await tsRow.innerText(), new RegExp(`${p}-mon \\(mon0\\)[\\s\\S]*128 bytes`));

  step('a bad VLAN filter shows the API message next to the field');
  const tfForm = page.locator('#tap_flow-form');
  await tfForm.getByLabel('Name').fill(`${p}-tf`);
  await tfForm.getByLabel('Source port').selectOption({ label: `${p}-src (cap0)` });
  await tfForm.getByLabel('Tap service').selectOption({ label: `${p}-ts` });
  await tfForm.getByLabel('Direction').selectOption('IN');
  const vlan = tfForm.getByLabel('VLAN filter');
  await vlan.fill('10-20,');
  await tfForm.getByRole('button', { name: 'Create tap flow' }).click();
  const vlanError = page.locator('#tf-vlan-error');
  const msg = await until('the VLAN filter error', async () => {
    const t = await vlanError.innerText();
    return /vlan_filter/.test(t) && t;
  });
  assert.match(msg, /Invalid input for vlan_filter/);
  assert.equal(await vlan.getAttribute('aria-invalid'), 'true');
  // The message is the input's accessible description too.
  assert.equal(await vlan.getAttribute('aria-describedby'), 'tf-vlan-error');
  assert.equal(await page.locator('#tap_flows-table tbody tr', { hasText: `${p}-tf` }).count(), 0);
  await shot(page, 'crud-vlan-error');

  step('a filter the API refuses shows its message, verbatim, next to the field');
  await vlan.fill('10-20,30');
  const filter = tfForm.getByLabel('Filter (pcap-filter expression)');
  await filter.fill('vlan 10');
  await tfForm.getByRole('button', { name: 'Create tap flow' }).click();
  const filterError = page.locator('#tf-filter-error');
  const filterMsg = await until('the filter error', async () => {
    const t = await filterError.innerText();
    return /^Invalid input for filter\. Reason: /.test(t) && t;
  });
  // What the API itself answers for that expression.
  const refusal = await fetch(`${BASE}/v2.0/taas/tap_flows`, { method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ tap_flow: { tap_service_id: (await api('GET', `/v2.0/taas/tap_services?name=${p}-ts`)).tap_services[0].id,
      source_port: (await api('GET', `/v2.0/ports?name=${p}-src`)).ports[0].id, direction: 'IN', filter: 'vlan 10' } }) });
  assert.equal(refusal.status, 400);
  assert.equal(filterMsg, (await refusal.json()).NeutronError.message);
  assert.match(filterMsg, /vlan_filter/, 'the reason says where VLANs are selected');
  assert.equal(await filter.getAttribute('aria-invalid'), 'true');
  assert.equal(await vlanError.innerText(), '', 'the message is not under the VLAN filter');
  await shot(page, 'crud-filter-error');
  const expr = 'tcp port 443 and not icmp';

  step('a good VLAN filter and filter create the flow');
  await filter.fill(expr);
  await tfForm.getByRole('button', { name: 'Create tap flow' }).click();
  const tfRow = page.locator('#tap_flows-table tbody tr', { hasText: `${p}-tf` });
  await tfRow.waitFor();
  const tfText = await tfRow.innerText();
  assert.match(tfText, /IN/);
  assert.match(tfText, /10-20,30/);
  assert.equal(await tfRow.locator('[data-field="filter"]').innerText(), expr);
  assert.equal(await vlanError.innerText(), '');
  assert.equal(await filterError.innerText(), '');
  assert.equal(await vlan.getAttribute('aria-invalid'), null);

  step('the API holds what the forms sent');
  const ports = (await api('GET', '/v2.0/ports')).ports;
  const mon = ports.find((x) => x.name === `${p}-mon`);
  const src = ports.find((x) => x.name === `${p}-src`);
  assert.deepEqual(mon['binding:profile'], { interface: 'mon0' });
  assert.equal(src.mac_address, mac);
  const ts = (await api('GET', '/v2.0/taas/tap_services')).tap_services.find((x) => x.name === `${p}-ts`);
  assert.equal(ts.port_id, mon.id);
  assert.equal(ts.description, 'copies to the sensor');
  assert.equal(ts.snaplen, 128);
  const tf = (await api('GET', '/v2.0/taas/tap_flows')).tap_flows.find((x) => x.name === `${p}-tf`);
  assert.equal(tf.source_port, src.id);
  assert.equal(tf.tap_service_id, ts.id);
  assert.equal(tf.direction, 'IN');
  assert.equal(tf.vlan_filter, '10-20,30');
  assert.equal(tf.filter, expr);
  assert.equal((await api('GET', '/v2.0/ports')).ports.filter((x) => x.name === `${p}-badmac`).length, 0);
  await shot(page, 'crud-manage');

  step('rename the flow');
  await tfRow.getByRole('button', { name: `Edit tap flow ${p}-tf` }).click();
  assert.equal(await vlan.isDisabled(), true, 'vlan_filter cannot change after create');
  await tfForm.getByLabel('Name').fill(`${p}-tf-renamed`);
  await tfForm.getByRole('button', { name: 'Save' }).click();
  await page.locator('#tap_flows-table tbody tr', { hasText: `${p}-tf-renamed` }).waitFor();
  await until('the form back in create mode', async () => (await tfForm.locator('legend').innerText()) === 'Create tap flow');

  step("change the service's snaplen, then clear it");
  await tsRow.getByRole('button', { name: `Edit tap service ${p}-ts` }).click();
  assert.equal(await snaplen.inputValue(), '128', 'the form shows the snaplen');
  assert.equal(await snaplen.isDisabled(), false, 'snaplen can change after create');
  await snaplen.fill('65536');
  await tsForm.getByRole('button', { name: 'Save' }).click();
  await until('the snaplen error on update', async () => /'65536' is too large/.test(await snaplenError.innerText()));
  await snaplen.fill('256');
  await tsForm.getByRole('button', { name: 'Save' }).click();
  await until('the new snaplen listed', async () => /256 bytes/.test(await tsRow.innerText()));
  assert.equal((await api('GET', `/v2.0/taas/tap_services/${ts.id}`)).tap_service.snaplen, 256);
  await tsRow.getByRole('button', { name: `Edit tap service ${p}-ts` }).click();
  await snaplen.fill('');
  await tsForm.getByRole('button', { name: 'Save' }).click();
  await until('whole frames listed', async () => /whole frames/.test(await tsRow.innerText()));
  const cleared = (await api('GET', `/v2.0/taas/tap_services/${ts.id}`)).tap_service;
  assert.equal(cleared.snaplen, null);
  assert.equal(cleared.description, 'copies to the sensor', 'the update kept the rest');
  await api('PUT', `/v2.0/taas/tap_services/${ts.id}`, { tap_service: { snaplen: 1500 } });

  step('rebind a port to another interface');
  await portRow(`${p}-src`).getByRole('button', { name: `Edit port ${p}-src` }).click();
  assert.equal(await portForm.getByLabel('MAC address').isDisabled(), true, 'the MAC cannot change after create');
  await portForm.getByLabel('Interface').fill('cap1');
  await portForm.getByRole('button', { name: 'Save' }).click();
  await until('the new binding listed', async () => /cap1/.test(await portRow(`${p}-src`).innerText()));
  const rebound = (await api('GET', `/v2.0/ports/${src.id}`)).port;
  assert.deepEqual(rebound['binding:profile'], { interface: 'cap1' });
  assert.equal(rebound.mac_address, mac);

  step('the overview shows the service and its flow');
  await nav(page, 'Overview');
  const card = page.locator('article.service', { has: page.getByRole('heading', { name: `${p}-ts` }) });
  await card.waitFor();
  assert.match(await card.innerText(), new RegExp(`${p}-tf-renamed`));
  assert.match(await card.innerText(), /10-20,30/);
  await until('the snaplen set through the API', async () => /copies of 1500 bytes/.test(await card.innerText()));
  const ovFlow = card.locator(`tr[data-id="${tf.id}"]`);
  assert.equal(await ovFlow.locator('[data-field="filter"]').innerText(), expr);
  await until('the rejected counter', async () => (await ovFlow.locator('[data-field="rejected-packets"]').getAttribute('data-value')) === '0');
  await shot(page, 'crud-overview');

  step('a change made elsewhere appears without a reload (server-sent events)');
  assert.equal(await page.locator('#live').innerText(), 'live', 'the events stream is connected');
  const t1 = Date.now();
  await api('PUT', `/v2.0/taas/tap_services/${ts.id}`, { tap_service: { name: `${p}-ts-elsewhere` } });
  await page.getByRole('heading', { name: `${p}-ts-elsewhere` }).waitFor();
  metric('ui_change_latency_ms', Date.now() - t1, 'ms');
  await api('PUT', `/v2.0/taas/tap_services/${ts.id}`, { tap_service: { name: `${p}-ts` } });
  await page.getByRole('heading', { name: `${p}-ts`, exact: true }).waitFor();

  step('delete a port with two clicks');
  await nav(page, 'Manage');
  await portForm.getByLabel('Name').fill(`${p}-gone`);
  await portForm.getByRole('button', { name: 'Create port' }).click();
  await portRow(`${p}-gone`).waitFor();
  await portRow(`${p}-gone`).getByRole('button', { name: `Delete port ${p}-gone` }).click();
  await portRow(`${p}-gone`).getByRole('button', { name: `Confirm delete port ${p}-gone` }).click();
  await until('the port to leave the list', async () => (await portRow(`${p}-gone`).count()) === 0);
  assert.equal((await api('GET', '/v2.0/ports')).ports.filter((x) => x.name === `${p}-gone`).length, 0);

  step('delete the flow and the service');
  const tfRenamed = page.locator('#tap_flows-table tbody tr', { hasText: `${p}-tf-renamed` });
  await tfRenamed.getByRole('button', { name: `Delete tap flow ${p}-tf-renamed` }).click();
  await tfRenamed.getByRole('button', { name: `Confirm delete tap flow ${p}-tf-renamed` }).click();
  await until('the flow to leave the list', async () => (await tfRenamed.count()) === 0);
  await tsRow.getByRole('button', { name: `Delete tap service ${p}-ts` }).click();
  await tsRow.getByRole('button', { name: `Confirm delete tap service ${p}-ts` }).click();
  await until('the service to leave the list', async () => (await tsRow.count()) === 0);

  // The API answered the bad MAC, VLAN, filter and snaplens with 400s,
  // which Chromium logs.
  checkProblems(page, [/status of 400/]);
});
