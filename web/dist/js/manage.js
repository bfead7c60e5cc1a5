// The manage view: create, update and delete ports, tap services, tap
// flows and tap mirrors. Each form sends what the user typed to the API as it is (the
// browser validates nothing the API validates), and shows the API's
// NeutronError message next to the field it names. Tap services, flows
// and mirrors also get a Capture button (capture.js).

import * as api from './api.js';
import { h, $, $$, statusBadge, replaceRows } from './dom.js';
import { captureButton } from './capture.js';
import { errorAttr, directionOf, directionsText, DIRECTIONS, label, shortID, snaplenValue, snaplenText, filterText, portChoices, portUse } from './model.js';

// resources describes each form: where it posts, the wrapper key, the
// attributes PUT may change, and how form values become a request body.
const resources = {
  port: {
    coll: 'ports', title: 'port',
    body(f, editing) {
      const b = {};
      if (f.name.value !== '' || editing) b.name = f.name.value;
      if (!editing) {
        if (f.network_id.value) b.network_id = f.network_id.value;
        if (f.mac_address.value !== '') b.mac_address = f.mac_address.value;
      }
      // The binding is the admin's: the API refuses a member's request that
      // names it, so an update sends it only when it changed (an empty
      // interface then clears it). On create an empty one is simply a port
      // without one.
      const iface = f.interface.value;
      if (editing ? iface !== (f.interface.dataset.bound || '') : iface !== '') {
        b['binding:profile'] = iface !== '' ? { interface: iface } : {};
      }
      b.admin_state_up = f.admin_state_up.checked;
      return b;
    },
    fill(f, p) {
      f.name.value = p.name || '';
      f.network_id.value = p.network_id || '';
      f.mac_address.value = p.mac_address || '';
      f.interface.value = (p['binding:profile'] && p['binding:profile'].interface) || '';
      f.interface.dataset.bound = f.interface.value;
      f.admin_state_up.checked = p.admin_state_up !== false;
    },
  },
  tap_service: {
    coll: 'taas/tap_services', title: 'tap service',
    body(f, editing) {
      const b = {};
      if (f.name.value !== '' || editing) b.name = f.name.value;
      if (f.description.value !== '' || editing) b.description = f.description.value;
      if (!editing) b.port_id = f.port_id.value;
      setSnaplen(b, f.snaplen.value, editing);
      return b;
    },
    fill(f, s) {
      f.name.value = s.name || '';
      f.description.value = s.description || '';
      f.port_id.value = s.port_id;
      f.snaplen.value = s.snaplen === null || s.snaplen === undefined ? '' : String(s.snaplen);
    },
  },
  tap_flow: {
    coll: 'taas/tap_flows', title: 'tap flow',
    body(f, editing) {
      const b = {};
      if (f.name.value !== '' || editing) b.name = f.name.value;
      if (f.description.value !== '' || editing) b.description = f.description.value;
      if (!editing) {
        b.source_port = f.source_port.value;
        b.tap_service_id = f.tap_service_id.value;
        b.direction = f.direction.value;
        // Sent verbatim: the API owns the vlan_filter grammar and its
        // message is what the user sees. Empty means every VLAN (null).
        if (f.vlan_filter.value !== '') b.vlan_filter = f.vlan_filter.value;
        // The same for the filter: pcap-filter syntax is the API's (and
        // libpcap's) to judge. Empty means every frame (null).
        if (f.filter.value !== '') b.filter = f.filter.value;
      }
      return b;
    },
    fill(f, fl) {
      f.name.value = fl.name || '';
      f.description.value = fl.description || '';
      f.source_port.value = fl.source_port;
      f.tap_service_id.value = fl.tap_service_id;
      f.direction.value = fl.direction;
      f.vlan_filter.value = fl.vlan_filter || '';
      f.filter.value = fl.filter || '';
    },
  },
  tap_mirror: {
    coll: 'taas/tap_mirrors', title: 'tap mirror',
    body(f, editing) {
      const b = {};
      if (f.name.value !== '' || editing) b.name = f.name.value;
      if (f.description.value !== '' || editing) b.description = f.description.value;
      if (!editing) {
        b.port_id = f.port_id.value;
        b.mirror_type = f.mirror_type.value;
        b.remote_ip = f.remote_ip.value;
        // Each id as typed, a string, as the openstack client's
        // --directions IN=101 sends it; the API keeps it so and owns the
        // ranges. Empty leaves the direction out.
        b.directions = {};
        for (const d of DIRECTIONS) {
          if (f[`dir_${d}`].value !== '') b.directions[d] = f[`dir_${d}`].value;
        }
      }
      setSnaplen(b, f.snaplen.value, editing);
      return b;
    },
    fill(f, m) {
      f.name.value = m.name || '';
      f.description.value = m.description || '';
      f.port_id.value = m.port_id;
      f.mirror_type.value = m.mirror_type;
      f.remote_ip.value = m.remote_ip;
      for (const d of DIRECTIONS) {
        const v = (m.directions || {})[d];
        f[`dir_${d}`].value = v === undefined ? '' : String(v);
      }
      f.snaplen.value = m.snaplen === null || m.snaplen === undefined ? '' : String(m.snaplen);
    },
  },
};

// setSnaplen puts a tap service's or mirror's snaplen field into body b:
// empty leaves it out on create (whole frames) and clears it (null) on
// update.
function setSnaplen(b, typed, editing) {
  if (typed !== '' || editing) b.snaplen = snaplenValue(typed);
}

let app; // set by initManage: {refresh, toast, state}

export function initManage(a) {
  app = a;
  for (const [key, res] of Object.entries(resources)) {
    const form = $(`#${key}-form`);
    res.key = key;
    res.form = form;
    res.submitLabel = form.querySelector('button[type=submit]').textContent;
    res.legend = form.querySelector('legend').textContent;
    // Every field gets an error slot, tied to it for screen readers.
    for (const input of $$('[data-attr]', form)) {
      const err = h('p', { class: 'field-error', id: `${input.id}-error` });
      input.setAttribute('aria-describedby', err.id);
      input.closest('.field').append(err);
      // Editing a field settles its error: the next submit says anew.
      input.addEventListener('input', () => {
        err.textContent = '';
        input.removeAttribute('aria-invalid');
      });
    }
    form.addEventListener('submit', (ev) => { ev.preventDefault(); submit(res); });
    form.querySelector('.cancel').addEventListener('click', () => stopEditing(res));
  }
}

function clearErrors(form) {
  for (const el of $$('.field-error', form)) el.textContent = '';
  for (const el of $$('[aria-invalid]', form)) el.removeAttribute('aria-invalid');
  form.querySelector('.form-error').textContent = '';
}

function showError(form, err) {
  const attrs = errorAttr(err).split(' ').filter(Boolean);
  let input = attrs.map((a) => form.querySelector(`[data-attr="${a}"]:not(:disabled)`)).find(Boolean);
  // A tap mirror's directions are one attribute in three inputs: the
  // message goes next to the direction it is about.
  const dirs = input && input.dataset.direction ? $$(`[data-attr="${input.dataset.attr}"]`, form) : [];
  if (dirs.length) {
    const typed = Object.fromEntries(dirs.map((el) => [el.dataset.direction, el.value]));
    const d = directionOf(err, typed);
    input = dirs.find((el) => el.dataset.direction === d) || input;
  }
  if (input) {
    input.setAttribute('aria-invalid', 'true');
    $(`#${input.id}-error`).textContent = err.message;
    input.focus();
  } else {
    form.querySelector('.form-error').textContent = err.message;
  }
}

async function submit(res) {
  const form = res.form;
  const editing = form.dataset.editId || '';
  clearErrors(form);
  const button = form.querySelector('button[type=submit]');
  button.disabled = true;
  try {
    const body = res.body(form.elements, Boolean(editing));
    const out = editing
      ? await api.update(res.coll, res.key, editing, body)
      : await api.create(res.coll, res.key, body);
    const obj = out && out[res.key];
    app.toast(`${editing ? 'Updated' : 'Created'} ${res.title} ${label(obj)}.`);
    if (editing) stopEditing(res);
    else resetForm(res);
    await app.refresh();
  } catch (err) {
    if (err.status === 401) return; // the token dialog takes over
    showError(form, err);
  } finally {
    button.disabled = false;
  }
}

function resetForm(res) {
  const form = res.form;
  for (const el of $$('input:not([type=checkbox])', form)) el.value = '';
  for (const el of $$('input[type=checkbox]', form)) el.checked = true;
}

function startEditing(res, obj) {
  const form = res.form;
  clearErrors(form);
  form.dataset.editId = obj.id;
  res.fill(form.elements, obj);
  for (const el of $$('[data-create-only]', form)) el.disabled = true;
  form.querySelector('legend').textContent = `Edit ${res.title} ${label(obj)}`;
  form.querySelector('button[type=submit]').textContent = 'Save';
  form.querySelector('.cancel').hidden = false;
  form.classList.add('editing');
  form.scrollIntoView({ block: 'nearest' });
  form.querySelector('input:not(:disabled)').focus();
}

function stopEditing(res) {
  const form = res.form;
  delete form.dataset.editId;
  clearErrors(form);
  for (const el of $$('[data-create-only]', form)) el.disabled = false;
  form.querySelector('legend').textContent = res.legend;
  form.querySelector('button[type=submit]').textContent = res.submitLabel;
  form.querySelector('.cancel').hidden = true;
  form.classList.remove('editing');
  resetForm(res);
}

// deleteButton asks for a second click instead of a modal confirm(): the
// button turns into "Confirm delete" for a few seconds.
function deleteButton(res, obj) {
  const name = label(obj);
  const b = h('button', { type: 'button', class: 'danger', 'aria-label': `Delete ${res.title} ${name}` }, 'Delete');
  let armed = null;
  b.addEventListener('click', async () => {
    if (!armed) {
      b.textContent = 'Confirm delete';
      b.setAttribute('aria-label', `Confirm delete ${res.title} ${name}`);
      armed = setTimeout(() => {
        armed = null;
        b.textContent = 'Delete';
        b.setAttribute('aria-label', `Delete ${res.title} ${name}`);
      }, 5000);
      return;
    }
    clearTimeout(armed);
    b.disabled = true;
    try {
      await api.remove(res.coll, obj.id);
      app.toast(`Deleted ${res.title} ${name}.`);
      if (res.form.dataset.editId === obj.id) stopEditing(res);
      await app.refresh();
    } catch (err) {
      b.disabled = false;
      if (err.status !== 401) app.toast(`Could not delete ${res.title} ${name}: ${err.message}`, true);
    }
  });
  return b;
}

// actions are a row's buttons: Capture for what has frames to capture
// (tap services, flows and mirrors), Edit and Delete.
function actions(res, obj) {
  return h('td', { class: 'actions', 'data-label': 'Actions' },
    res.key === 'port' ? null : captureButton(res.coll, res.title, obj),
    h('button', { type: 'button', 'aria-label': `Edit ${res.title} ${label(obj)}`, onclick: () => startEditing(res, obj) }, 'Edit'),
    deleteButton(res, obj));
}

const td = (lbl, content, cls) => h('td', { 'data-label': lbl, class: cls }, content);
const idCell = (id) => td('ID', h('code', { title: id }, shortID(id)));

function options(select, items, none) {
  const prev = select.value;
  const opts = items.map((x) => h('option', { value: x.id }, x.text));
  if (opts.length === 0) opts.push(h('option', { value: '' }, none));
  const sig = JSON.stringify(items);
  if (select.dataset.sig === sig) return;
  select.dataset.sig = sig;
  select.replaceChildren(...opts);
  if (items.some((x) => x.id === prev)) select.value = prev;
}

// orEmpty stands in a one-cell row saying so when a table has no rows.
function orEmpty(rows, cols, text) {
  return rows.length ? rows : [h('tr', {}, h('td', { colspan: cols, class: 'empty' }, text))];
}

export function renderManage(st) {
  const ifaceOf = (p) => (p['binding:profile'] && p['binding:profile'].interface) || '';
  const portText = (p) => `${label(p)}${ifaceOf(p) ? ` (${ifaceOf(p)})` : ''}`;
  const netByID = new Map(st.networks.map((n) => [n.id, n]));

  options($('#port-network'), st.networks.map((n) => ({ id: n.id, text: label(n) })), 'no network');
  // Each port list offers the ports that fit its role, the fitting first
  // (model.js portChoices): by interface role for admins, by what the
  // member's own resources tell otherwise.
  const ifaceStats = (st.stats && st.stats.interfaces) || [];
  const used = portUse(st.services, st.flows, st.mirrors);
  const none = (role) => (st.ports.length ? `no port on a ${role} interface` : 'create a port first');
  options($('#ts-port'), portChoices('tap_service', st.ports, ifaceStats, used), none('monitor'));
  options($('#tf-source'), portChoices('tap_flow', st.ports, ifaceStats, used), none('capture'));
  options($('#tf-service'), st.services.map((s) => ({ id: s.id, text: label(s) })), 'create a tap service first');
  options($('#tm-port'), portChoices('tap_mirror', st.ports, ifaceStats, used), none('capture'));
  const ifaces = ifaceStats.map((i) => i.name);
  const dl = $('#iface-list');
  if (dl.dataset.sig !== ifaces.join()) {
    dl.dataset.sig = ifaces.join();
    dl.replaceChildren(...ifaces.map((n) => h('option', { value: n })));
  }

  const R = resources;
  replaceRows($('#ports-table tbody'), orEmpty(st.ports.map((p) => h('tr', { 'data-id': p.id },
    h('th', { scope: 'row', 'data-label': 'Name' }, label(p)),
    td('Interface', ifaceOf(p) || '–'),
    td('MAC address', h('code', {}, p.mac_address || '')),
    td('Network', label(netByID.get(p.network_id) || { id: p.network_id })),
    td('Admin', p.admin_state_up === false ? 'down' : 'up'),
    idCell(p.id),
    actions(R.port, p))), 7, 'No ports yet.'), JSON.stringify(st.ports));

  const statusSig = (arr) => arr.map((x) => { const s = st.statusOf(x); return [x, s.status, s.reason]; });
  replaceRows($('#tap_services-table tbody'), orEmpty(st.services.map((s) => {
    const port = st.portsByID.get(s.port_id);
    const ss = st.statusOf(s);
    return h('tr', { 'data-id': s.id },
      h('th', { scope: 'row', 'data-label': 'Name' }, label(s)),
      td('Port', port ? portText(port) : shortID(s.port_id)),
      td('Snaplen', snaplenText(s.snaplen)),
      td('Status', statusBadge(ss.status, ss.reason)),
      td('Description', s.description || ''),
      idCell(s.id),
      actions(R.tap_service, s));
  }), 7, 'No tap services yet.'), JSON.stringify([statusSig(st.services), st.ports]));

  replaceRows($('#tap_flows-table tbody'), orEmpty(st.flows.map((f) => {
    const src = st.portsByID.get(f.source_port);
    const svc = st.services.find((s) => s.id === f.tap_service_id);
    const fs = st.statusOf(f);
    return h('tr', { 'data-id': f.id },
      h('th', { scope: 'row', 'data-label': 'Name' }, label(f)),
      td('Source port', src ? portText(src) : shortID(f.source_port)),
      td('Tap service', svc ? label(svc) : shortID(f.tap_service_id)),
      td('Direction', f.direction),
      td('VLAN filter', f.vlan_filter === null || f.vlan_filter === undefined ? 'all' : f.vlan_filter),
      td('Filter', h('code', { 'data-field': 'filter' }, filterText(f.filter))),
      td('Status', statusBadge(fs.status, fs.reason)),
      idCell(f.id),
      actions(R.tap_flow, f));
  }), 9, 'No tap flows yet.'), JSON.stringify([statusSig(st.flows), st.ports, st.services]));

  replaceRows($('#tap_mirrors-table tbody'), orEmpty(st.mirrors.map((m) => {
    const port = st.portsByID.get(m.port_id);
    const ms = st.statusOf(m);
    return h('tr', { 'data-id': m.id },
      h('th', { scope: 'row', 'data-label': 'Name' }, label(m)),
      td('Port', port ? portText(port) : shortID(m.port_id)),
      td('Type', m.mirror_type),
      td('Remote IP', h('code', {}, m.remote_ip)),
      td('Directions', h('code', { 'data-field': 'directions' }, directionsText(m.directions))),
      td('Snaplen', snaplenText(m.snaplen)),
      td('Status', statusBadge(ms.status, ms.reason)),
      idCell(m.id),
      actions(R.tap_mirror, m));
  }), 9, 'No tap mirrors yet.'), JSON.stringify([statusSig(st.mirrors), st.ports]));
}
