// The dashboard's only way to the appliance: the public REST API of the
// same origin. Errors come back as ApiError carrying the NeutronError type
// and message, which the forms show next to the field they name.

const TOKEN_KEY = 'taas.token';

export class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

export function setToken(t) {
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
}

// onUnauthorized is called on every 401, so the app can ask for a token.
let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

export async function request(method, path, body) {
  const headers = { Accept: 'application/json' };
  const t = token();
  if (t) headers['X-Auth-Token'] = t;
  const init = { method, headers, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'NetworkError', `The appliance did not answer (${e.message}).`);
  }
  if (res.status === 204) return null;
  const text = await res.text();
  const data = parse(text);
  if (res.ok) return data;
  throw failure(res, data, text);
}

function parse(text) {
  if (!text) return null;
  try { return JSON.parse(text); } catch { return null; }
}

// failure is the ApiError of an answer that is not 2xx; a 401 also asks
// for a token.
function failure(res, data, text) {
  if (res.status === 401) onUnauthorized();
  return errorFrom(res, data, text);
}

// capture starts a live capture (issue 12): GET path (with its query)
// answered with a pcapng stream. It resolves to the Response once the
// appliance has accepted the capture (its body is the stream), and throws
// ApiError when it did not (400, 404, 409: the NeutronError message).
// Aborting signal ends the capture (the appliance sees the connection
// close); before the answer that rejects with the AbortError.
export async function capture(path, signal) {
  const headers = { Accept: 'application/x-pcapng' };
  const t = token();
  if (t) headers['X-Auth-Token'] = t;
  let res;
  try {
    res = await fetch(path, { headers, cache: 'no-store', signal });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'NetworkError', `The appliance did not answer (${e.message}).`);
  }
  if (res.ok) return res;
  const text = await res.text();
  throw failure(res, parse(text), text);
}

// errorFrom reads Neutron's error bodies: {"NeutronError": {type, message,
// detail}}, the unwrapped {type, message} of a policy 404, and the
// NotImplementedError body of a 501.
function errorFrom(res, data, text) {
  const e = data && (data.NeutronError || data.NotImplementedError || data.error || data);
  if (e && typeof e === 'object' && typeof e.message === 'string') {
    const msg = e.detail ? `${e.message} ${e.detail}` : e.message;
    return new ApiError(res.status, e.type || '', msg);
  }
  if (typeof e === 'string') return new ApiError(res.status, '', e);
  return new ApiError(res.status, '', text.trim() || `${res.status} ${res.statusText}`);
}

export const list = (coll) => request('GET', `/v2.0/${coll}`);
export const create = (coll, key, obj) => request('POST', `/v2.0/${coll}`, { [key]: obj });
export const update = (coll, key, id, obj) => request('PUT', `/v2.0/${coll}/${encodeURIComponent(id)}`, { [key]: obj });
export const remove = (coll, id) => request('DELETE', `/v2.0/${coll}/${encodeURIComponent(id)}`);
export const stats = () => request('GET', '/v2.0/taas/stats');
export const nodes = () => request('GET', '/v2.0/taas/nodes');
