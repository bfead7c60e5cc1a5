// Unit tests of the Capture dialog's pcapng counter (web/dist/js/pcapng.js)
// and its helpers, run by node's test runner (TestModel in web/e2e_test.go,
// which also writes PCAPNG_FIXTURE: a capture made by gopacket's pcapgo
// writer, the library the appliance writes its streams with).

import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { PcapngCounter, trimmed } from '../dist/js/pcapng.js';
import { captureQuery, captureParam, fileName, bytesText } from '../dist/js/model.js';

// block builds one pcapng block of type with body (bytes), in either byte
// order, padded to 4 bytes.
function block(type, body, little = true) {
  const pad = (4 - (body.length % 4)) % 4;
  const len = 12 + body.length + pad;
  const b = new Uint8Array(len);
  const v = new DataView(b.buffer);
  v.setUint32(0, type, little);
  v.setUint32(4, len, little);
  b.set(body, 8);
  v.setUint32(len - 4, len, little);
  return b;
}

function u32s(little, ...ns) {
  const b = new Uint8Array(4 * ns.length);
  const v = new DataView(b.buffer);
  ns.forEach((n, i) => v.setUint32(4 * i, n, little));
  return b;
}

const cat = (...parts) => {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
};

// stream is a section header, an interface, packets enhanced packet blocks
// of size bytes each, and a statistics block saying dropped.
function stream({ little = true, packets = 3, size = 60, dropped = 7, received = 10 } = {}) {
  const shb = block(0x0a0d0d0a, cat(u32s(little, 0x1a2b3c4d), new Uint8Array([...(little ? [1, 0, 0, 0] : [0, 1, 0, 0])]),
    u32s(little, 0xffffffff, 0xffffffff)), little);
  const idb = block(1, cat(new Uint8Array(little ? [1, 0, 0, 0] : [0, 1, 0, 0]), u32s(little, 262144)), little);
  const parts = [shb, idb];
  for (let i = 0; i < packets; i++) {
    parts.push(block(6, cat(u32s(little, 0, 0, i, size, size), new Uint8Array(size).fill(i)), little));
  }
  // isb_ifrecv (4) and isb_ifdrop (5): u64 each, low word first in little endian.
  const opt = (code, n) => cat(new Uint8Array(little ? [code, 0, 8, 0] : [0, code, 0, 8]),
    little ? u32s(true, n, 0) : u32s(false, 0, n));
  parts.push(block(5, cat(u32s(little, 0, 0, 0), opt(4, received), opt(5, dropped), new Uint8Array(4)), little));
  return cat(...parts);
}

// pushSplit pushes data to a new counter in pieces cut at cuts.
function pushSplit(data, cuts) {
  const c = new PcapngCounter();
  let from = 0;
  for (const at of [...cuts, data.length]) {
    c.push(data.subarray(from, at));
    from = at;
  }
  return c;
}

test('counts packets and reads the drops, whatever the chunks', () => {
  for (const little of [true, false]) {
    const data = stream({ little });
    const whole = new PcapngCounter().push(data);
    assert.equal(whole.error, '');
    assert.equal(whole.packets, 3);
    assert.equal(whole.dropped, 7);
    assert.equal(whole.received, 10);
    assert.equal(whole.whole, data.length);
    assert.equal(whole.bytes, data.length);
    // Every single cut, and every byte alone.
    for (let at = 0; at <= data.length; at++) {
      const c = pushSplit(data, [at]);
      assert.deepEqual([c.packets, c.dropped, c.whole, c.error], [3, 7, data.length, ''], `cut at ${at} (little ${little})`);
    }
    const bytes = pushSplit(data, [...Array(data.length).keys()]);
    assert.deepEqual([bytes.packets, bytes.dropped, bytes.whole], [3, 7, data.length]);
  }
});

test('a stream cut short counts its whole blocks only', () => {
  const data = stream({ packets: 5 });
  const ends = [];
  const full = new PcapngCounter();
  for (let i = 0; i < data.length; i++) {
    full.push(data.subarray(i, i + 1));
    ends.push([full.packets, full.whole]);
  }
  for (let n = 0; n < data.length; n++) {
    const c = new PcapngCounter().push(data.subarray(0, n));
    const [packets, whole] = n === 0 ? [0, 0] : ends[n - 1];
    assert.equal(c.packets, packets, `first ${n} bytes`);
    assert.equal(c.whole, whole, `first ${n} bytes`);
    assert.ok(c.whole <= n);
  }
});

test('not pcapng: says why and stops, never throws', () => {
  for (const [what, data] of [
    ['json', new TextEncoder().encode('{"NeutronError": {"type": "x", "message": "y", "detail": ""}}')],
    ['no byte-order magic', cat(u32s(true, 0x0a0d0d0a, 28, 0x01020304), new Uint8Array(16))],
    ['a packet before any section', block(6, new Uint8Array(24))],
    ['a length not a multiple of 4', cat(stream().subarray(0, 28), u32s(true, 6, 33, 0))],
    ['a huge block', cat(stream().subarray(0, 28), u32s(true, 6, 1 << 30, 0))],
  ]) {
    const c = new PcapngCounter().push(data);
    assert.notEqual(c.error, '', what);
    const packets = c.packets;
    c.push(stream());
    assert.equal(c.packets, packets, `${what}: counting stopped`);
  }
});

test('random bytes and random cuts: no exception, no count beyond the blocks', () => {
  // A fuzz loop with a fixed seed (xorshift), so a failure repeats.
  let s = 0x9e3779b9;
  const rnd = (n) => { s ^= s << 13; s ^= s >>> 17; s ^= s << 5; return (s >>> 0) % n; };
  const good = stream({ packets: 20, size: 100 });
  for (let round = 0; round < 2000; round++) {
    const data = good.slice();
    for (let k = rnd(4); k > 0; k--) data[rnd(data.length)] = rnd(256);
    const cuts = [];
    for (let k = rnd(6); k > 0; k--) cuts.push(rnd(data.length));
    cuts.sort((a, b) => a - b);
    const c = pushSplit(data, cuts);
    assert.ok(c.packets <= 20 + 8, `round ${round}: ${c.packets} packets`);
    assert.ok(c.whole <= data.length);
  }
});

test('a real capture written by gopacket pcapgo', { skip: !process.env.PCAPNG_FIXTURE && 'PCAPNG_FIXTURE not set (TestModel sets it)' }, () => {
  const data = new Uint8Array(fs.readFileSync(process.env.PCAPNG_FIXTURE));
  const want = JSON.parse(process.env.PCAPNG_FIXTURE_WANT);
  for (const cuts of [[], [1], [13, 200], [...Array(data.length).keys()].filter((i) => i % 7 === 0)]) {
    const c = pushSplit(data, cuts);
    assert.equal(c.error, '');
    assert.equal(c.packets, want.packets);
    assert.equal(c.dropped, want.dropped);
    assert.equal(c.received, want.received);
    assert.equal(c.whole, data.length);
  }
});

test('trimmed keeps the first n bytes of the chunks', () => {
  const chunks = [new Uint8Array([1, 2, 3]), new Uint8Array([4, 5]), new Uint8Array([6])];
  const flat = (cs) => [...cat(...cs)];
  assert.deepEqual(flat(trimmed(chunks, 6)), [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(flat(trimmed(chunks, 4)), [1, 2, 3, 4]);
  assert.deepEqual(flat(trimmed(chunks, 3)), [1, 2, 3]);
  assert.deepEqual(flat(trimmed(chunks, 0)), []);
});

test('capture query, parameter of an error, file name, bytes', () => {
  assert.equal(captureQuery({ duration: '10', count: '', snaplen: ' 128 ' }), '?duration=10&snaplen=128');
  assert.equal(captureQuery({ duration: '', count: '', snaplen: '' }), '');
  assert.equal(captureQuery({ duration: 'a b&c' }), '?duration=a+b%26c');
  assert.equal(captureParam({ status: 400, message: "Invalid input for duration. Reason: '0' is not in 1..3600." }), 'duration');
  assert.equal(captureParam({ status: 400, message: 'snaplen must be from 64 to 262144' }), 'snaplen');
  assert.equal(captureParam({ status: 409, message: 'At most 8 live captures run at once.' }), '');
  // The 409's own message names duration and count: no field is to blame.
  assert.equal(captureParam({ status: 409, message: '8 live captures already run, the most the appliance serves at once: retry when one ends at its duration, its count, ...' }), '');
  for (const [header, want] of [
    ['attachment; filename="tap_service-web.pcapng"', 'tap_service-web.pcapng'],
    ['attachment; filename=plain.pcapng', 'plain.pcapng'],
    ["attachment; filename=\"x.pcapng\"; filename*=UTF-8''caf%C3%A9.pcapng", 'café.pcapng'],
    ['attachment; filename="../../etc/passwd"', 'passwd'],
    ['attachment; filename="a \\"q\\".pcapng"', 'a "q".pcapng'],
    ['attachment', 'fallback.pcapng'],
    [null, 'fallback.pcapng'],
    ['attachment; filename=".."', 'fallback.pcapng'],
  ]) assert.equal(fileName(header, 'fallback.pcapng'), want, String(header));
  assert.equal(bytesText(950), '950 B');
  assert.equal(bytesText(1_230_000), '1.23 MB');
});
