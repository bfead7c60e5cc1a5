// A few DOM helpers. Text always goes in through textContent, never
// innerHTML, so names and messages from the API cannot inject markup.

// h builds an element: h('td', {class: 'num', 'data-label': 'RX'}, '12').
// Attributes whose value is false, null or undefined are left out; on*
// functions become listeners.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'hidden' || k === 'disabled') el[k] = Boolean(v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

// statusBadge shows ACTIVE / DOWN / ERROR / PENDING_DELETE as text with a
// colour; the reason, when there is one, follows as text too (colour alone
// is not enough for everyone).
export function statusBadge(status, reason) {
  const s = status || 'UNKNOWN';
  return h('span', { class: `status status-${s.toLowerCase()}`, 'data-status': s },
    h('span', { class: 'badge' }, s),
    reason ? h('span', { class: 'reason' }, reason) : null);
}

// replaceRows swaps a tbody's rows only when their content changed, so a
// refresh does not steal focus from a button the user is about to press.
export function replaceRows(tbody, rows, signature) {
  if (tbody.dataset.sig === signature) return;
  tbody.dataset.sig = signature;
  tbody.replaceChildren(...rows);
}
