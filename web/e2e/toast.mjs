// The toast that confirms a change never covers a table's rows (issue 13:
// it hid the row just created), on a laptop and on a phone: ports are
// created through the form until the table is taller than the screen, and
// with the toast shown, its box overlaps no row on screen.

import assert from 'node:assert/strict';
import { BASE, LAPTOP, PHONE, run, newPage, checkProblems, until, shot, step, nav } from './lib.mjs';

// covered lists the rows of the ports table on screen (below the top bar)
// that the toast's box overlaps. Geometry, not elementFromPoint: a toast
// that lets clicks through (pointer-events: none) still hides what is
// under it.
function covered(page) {
  return page.evaluate(() => {
    const t = document.getElementById('toast').getBoundingClientRect();
    const top = document.querySelector('header.bar').getBoundingClientRect().bottom;
    const out = [];
    for (const tr of document.querySelectorAll('#ports-table tbody tr')) {
      const r = tr.getBoundingClientRect();
      const y0 = Math.max(r.top, top);
      const y1 = Math.min(r.bottom, window.innerHeight);
      if (y1 <= y0 || t.width === 0) continue;
      if (Math.min(r.right, t.right) > Math.max(r.left, t.left) && Math.min(y1, t.bottom) > Math.max(y0, t.top)) {
        out.push(tr.textContent.slice(0, 40));
      }
    }
    return out;
  });
}

await run(async (browser) => {
  for (const [name, viewport, n] of [['laptop', LAPTOP, 14], ['phone', PHONE, 6]]) {
    step(`${name}: create ports until the table passes the bottom of the screen`);
    const page = await newPage(browser, viewport);
    await page.goto(`${BASE}/ui/#/overview`);
    await page.locator('body[data-loaded]').waitFor({ state: 'attached' });
    await nav(page, 'Manage');
    const form = page.locator('#port-form');
    const toast = page.locator('#toast');
    for (let i = 0; i < n; i++) {
      const pname = `toast-${name}-${process.pid}-${i}`;
      await form.getByLabel('Name').fill(pname);
      await form.getByRole('button', { name: 'Create port' }).click();
      // The toast comes with the create's answer and goes 4 s later; the
      // row with the refresh after it, which a loaded machine may take
      // longer over: the toast is waited for first.
      await until('the toast', async () => (await toast.innerText()).includes(`Created port ${pname}`) && toast.isVisible());
      const row = page.locator('#ports-table tbody tr', { hasText: pname });
      await row.waitFor();
      // The newest row at the bottom of the screen, where a toast would sit.
      await page.locator('#ports-table tbody tr').last().evaluate((el) => el.scrollIntoView({ block: 'end' }));
      const hidden = await covered(page);
      assert.deepEqual(hidden, [], `${name}: rows under the toast`);
    }
    await shot(page, `toast-${name}`);
    checkProblems(page);
    await page.context().close();
  }
});
