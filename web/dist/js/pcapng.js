// Counting a pcapng stream as its bytes arrive (issue 12's live capture):
// the Capture dialog shows how many packets have come while the appliance
// still sends them. Only block headers are read: each block's type and
// total length, then its body is skipped, so a chunk costs time in its
// number of blocks, not its bytes. Blocks may span chunks. The one body
// that is read is an Interface Statistics Block's (small, bounded), for the
// capture's dropped count. No DOM here.
//
// Block layout (pcapng, draft-ietf-opsawg-pcapng): type (u32), total length
// (u32, a multiple of 4, at least 12), body, total length again. A Section
// Header Block (type 0x0A0D0D0A, the same in both byte orders) starts each
// section; its byte-order magic, the first 4 bytes of its body, says how
// every number of the section is written.

const SHB = 0x0a0d0d0a;
const SPB = 3; // simple packet block
const ISB = 5; // interface statistics block
const EPB = 6; // enhanced packet block
const BYTE_ORDER_MAGIC = 0x1a2b3c4d;
const HEADER = 12; // type, length, and the SHB's byte-order magic
// MAX_BLOCK bounds a block's length: the API's largest snaplen (262144)
// and the options of a packet block fit well inside; anything longer is
// not a capture of this appliance.
const MAX_BLOCK = 1 << 20;
// MAX_ISB bounds the statistics blocks whose options are read.
const MAX_ISB = 4096;
const ISB_IFRECV = 4;
const ISB_IFDROP = 5;

// PcapngCounter counts the blocks of one pcapng stream: push each chunk
// as it comes.
export class PcapngCounter {
  constructor() {
    // packets are the whole packet blocks (enhanced or simple) so far.
    this.packets = 0;
    // bytes are all the bytes pushed.
    this.bytes = 0;
    // whole is how many of them make whole blocks: a file cut there is
    // readable to its last byte.
    this.whole = 0;
    // received and dropped are the last statistics block's isb_ifrecv and
    // isb_ifdrop; null until one says.
    this.received = null;
    this.dropped = null;
    // error says why the stream is not pcapng; counting stopped there.
    this.error = '';
    this.little = true;
    this.head = new Uint8Array(HEADER);
    this.have = 0; // bytes of head read so far
    this.type = 0;
    this.left = 0; // bytes of the current block still to come after head
    this.body = null; // a statistics block being collected whole
    this.kept = 0;
    this.section = false; // a section header has been seen
  }

  // push counts the blocks that chunk (a Uint8Array) completes.
  push(chunk) {
    const n = chunk.length;
    const start = this.bytes;
    this.bytes += n;
    let i = 0;
    while (i < n && !this.error) {
      if (this.have < HEADER) {
        const take = Math.min(HEADER - this.have, n - i);
        this.head.set(chunk.subarray(i, i + take), this.have);
        this.have += take;
        i += take;
        if (this.have === HEADER) this.begin();
        if (this.error || this.have < HEADER || this.left > 0) continue;
      } else {
        const take = Math.min(this.left, n - i);
        if (this.body) {
          this.body.set(chunk.subarray(i, i + take), this.kept);
          this.kept += take;
        }
        this.left -= take;
        i += take;
        if (this.left > 0) continue;
      }
      this.end(start + i);
    }
    return this;
  }

  // begin reads a block's header once its first 12 bytes are in.
  begin() {
    const v = new DataView(this.head.buffer);
    if (v.getUint32(0, true) === SHB) {
      if (v.getUint32(8, true) === BYTE_ORDER_MAGIC) this.little = true;
      else if (v.getUint32(8, false) === BYTE_ORDER_MAGIC) this.little = false;
      else return this.fail('a section header without the byte-order magic');
      this.section = true;
    } else if (!this.section) {
      return this.fail('no section header first: not pcapng');
    }
    this.type = v.getUint32(0, this.little);
    const len = v.getUint32(4, this.little);
    if (len < HEADER || len % 4 !== 0 || len > MAX_BLOCK) {
      return this.fail(`a block of type ${this.type} claims ${len} bytes`);
    }
    this.left = len - HEADER;
    this.body = null;
    if (this.type === ISB && len <= MAX_ISB) {
      this.body = new Uint8Array(len);
      this.body.set(this.head);
      this.kept = HEADER;
    }
  }

  // end counts the block that ended at stream offset at.
  end(at) {
    if (this.type === EPB || this.type === SPB) this.packets++;
    if (this.body) this.statistics(this.body);
    this.body = null;
    this.have = 0;
    this.whole = at;
  }

  // statistics reads isb_ifrecv and isb_ifdrop from a whole statistics
  // block: interface id, timestamp (high, low), then options from byte 20
  // to the trailing length.
  statistics(b) {
    const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
    for (let o = 20; o + 4 <= b.length - 4;) {
      const code = v.getUint16(o, this.little);
      const len = v.getUint16(o + 2, this.little);
      if (code === 0 || o + 4 + len > b.length - 4) break; // opt_endofopt, or an option overrunning the block
      if (len === 8 && (code === ISB_IFRECV || code === ISB_IFDROP)) {
        const hi = v.getUint32(this.little ? o + 8 : o + 4, this.little);
        const lo = v.getUint32(this.little ? o + 4 : o + 8, this.little);
        const n = hi * 2 ** 32 + lo;
        if (code === ISB_IFRECV) this.received = n;
        else this.dropped = n;
      }
      o += 4 + Math.ceil(len / 4) * 4;
    }
  }

  fail(why) {
    this.error = why;
  }
}

// trimmed returns the first n bytes of chunks (Uint8Arrays), as chunks: a
// capture cut short is saved up to its last whole block.
export function trimmed(chunks, n) {
  const out = [];
  let have = 0;
  for (const c of chunks) {
    if (have >= n) break;
    out.push(have + c.length <= n ? c : c.subarray(0, n - have));
    have += c.length;
  }
  return out;
}
