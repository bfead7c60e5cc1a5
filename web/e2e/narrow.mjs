// The dashboard on a narrow screen (390x844, a phone): nothing is wider
// than the viewport, tables become labelled cards, every control can be
// reached and has an accessible name, and a flow can be created there.

import assert from 'node:assert/strict';
import { BASE, PHONE, run, newPage, checkProblems, until, shot, step, api, nav } from './lib.mjs';

// overflowing lists the elements that stick out of the viewport to the right.
function overflowing(page) {
  return page.evaluate(() => {
    const w = document.documentElement.clientWidth;
    const out = [];
    for (const el of document.querySelectorAll('body *')) {
      const r = el.getBoundingClientRect();
      if (r.width > 0 && r.right > w + 1 && !el.closest('.table-wrap, .chart')) out.push(`${el.tagName}#${el.id}.${el.className} right=${Math.round(r.right)}`);
    }
    return { width: w, scroll: document.documentElement.scrollWidth, out: out.slice(0, 10) };
  });
}

// unnamed lists the controls without an accessible name.
function unnamed(page) {
  return page.evaluate(() => {
    const out = [];
    for (const el of document.querySelectorAll('button, input, select, a[href], textarea')) {
      if (el.closest('[hidden]') || el.type === 'hidden') continue;
      const byLabel = el.labels && [...el.labels].some((l) => l.textContent.trim());
      const name = el.getAttribute('aria-label') || el.getAttribute('aria-labelledby') || byLabel || el.textContent.trim() || el.title;
      if (!name) out.push(el.outerHTML.slice(0, 80));
    }
    return out;
  });
}

await run(async (browser) => {
  const p = `nar-${process.pid}`;
  // Resources to show, made through the API (the CRUD path is crud.mjs's).
  const net = (await api('GET', '/v2.0/networks')).networks[0];
  const mon = (await api('POST', '/v2.0/ports', { port: { name: `${p}-mon`, network_id: net.id, 'binding:profile': { interface: 'mon9' } } })).port;
  const src = (await api('POST', '/v2.0/ports', { port: { name: `${p}-src`, network_id: net.id, 'binding:profile': { interface: 'cap9' } } })).port;
  const ts = (await api('POST', '/v2.0/taas/tap_services', { tap_service: { name: `${p}-ts`, port_id: mon.id } })).tap_service;

  const page = await newPage(browser, PHONE);
  await page.goto(`${BASE}/ui/`);

  step('overview fits the screen');
  const card = page.locator('article.service', { has: page.getByRole('heading', { name: `${p}-ts` }) });
  await card.waitFor();
  let o = await overflowing(page);
  assert.equal(o.width, PHONE.width);
  assert.deepEqual(o.out, [], `elements wider than the screen: ${o.out.join(', ')}`);
  assert.ok(o.scroll <= PHONE.width + 1, `page scrolls sideways: ${o.scroll} > ${PHONE.width}`);
  await shot(page, 'narrow-overview');

  step('manage fits the screen; rows are labelled cards');
  await nav(page, 'Manage');
  const row = page.locator('#ports-table tbody tr', { hasText: `${p}-src` });
  await row.waitFor();
  o = await overflowing(page);
  assert.deepEqual(o.out, [], `elements wider than the screen: ${o.out.join(', ')}`);
  assert.ok(o.scroll <= PHONE.width + 1, `page scrolls sideways: ${o.scroll} > ${PHONE.width}`);
  // In card layout each cell shows its column name (the ::before label).
  const before = await row.locator('td[data-label="Interface"]').evaluate((td) => getComputedStyle(td, '::before').content);
  assert.equal(before, '"Interface"');
  assert.deepEqual(await unnamed(page), [], 'controls without an accessible name');

  step('create a flow on the narrow screen');
  const tfForm = page.locator('#tap_flow-form');
  await tfForm.getByLabel('Name').fill(`${p}-tf`);
  await tfForm.getByLabel('Source port').selectOption({ label: `${p}-src (cap9)` });
  await tfForm.getByLabel('Tap service').selectOption({ label: `${p}-ts` });
  await tfForm.getByRole('button', { name: 'Create tap flow' }).click();
  await page.locator('#tap_flows-table tbody tr', { hasText: `${p}-tf` }).waitFor();
  const flows = (await api('GET', '/v2.0/taas/tap_flows')).tap_flows.filter((f) => f.name === `${p}-tf`);
  assert.equal(flows.length, 1);
  assert.equal(flows[0].direction, 'BOTH');
  assert.equal(flows[0].vlan_filter, null);
  await shot(page, 'narrow-manage');

  step('the laptop layout has named controls too');
  await page.setViewportSize({ width: 1280, height: 800 });
  assert.deepEqual(await unnamed(page), [], 'controls without an accessible name');

  await api('DELETE', `/v2.0/taas/tap_services/${ts.id}`);
  await api('DELETE', `/v2.0/ports/${src.id}`);
  await api('DELETE', `/v2.0/ports/${mon.id}`);
  checkProblems(page);
});
