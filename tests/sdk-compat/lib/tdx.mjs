// SPDX-License-Identifier: Apache-2.0
// Independent readers for what the guest agent returns, written from the spec
// (guest-agent-api.md §4.8-§4.12) and not from our C code: TDX v4 quote register offsets,
// the V0 (SCALE) and V1 (MessagePack) VersionedAttestation encodings, RTMR replay and the
// runtime-event digest. The SDK tests compare the agent's answers against these.
import { createHash } from 'node:crypto';

export const QUOTE_HEADER_LEN = 48;
export const TD_REPORT_END = 632;
const OFF = { mrtd: 184, mrConfigId: 232, mrOwner: 280, mrOwnerConfig: 328, rtmr0: 376,
  reportData: 568 };
export const RUNTIME_EVENT_TYPE = 0x08000001;

export function quoteFields(quote) {
  const q = Buffer.from(quote);
  if (q.length < TD_REPORT_END) {
    throw new Error(`quote too short: ${q.length}`);
  }
  const f = (o, n) => q.subarray(o, o + n).toString('hex');
  return {
    version: q.readUInt16LE(0),
    attKeyType: q.readUInt16LE(2),
    teeType: q.readUInt32LE(4),
    mrtd: f(OFF.mrtd, 48),
    mrConfigId: f(OFF.mrConfigId, 48),
    mrOwner: f(OFF.mrOwner, 48),
    mrOwnerConfig: f(OFF.mrOwnerConfig, 48),
    rtmrs: [0, 1, 2, 3].map((i) => f(OFF.rtmr0 + 48 * i, 48)),
    reportData: f(OFF.reportData, 64),
  };
}

export const sha256 = (b) => createHash('sha256').update(b).digest();
export const sha384 = (b) => createHash('sha384').update(b).digest();
export const sha512 = (b) => createHash('sha512').update(b).digest();

// RTMR := SHA-384(RTMR || digest), digests shorter than 48 bytes zero-padded (as the SDK does).
export function extend(mrHex, digestHex) {
  let d = Buffer.from(digestHex, 'hex');
  if (d.length < 48) {
    d = Buffer.concat([d, Buffer.alloc(48 - d.length)]);
  }
  return sha384(Buffer.concat([Buffer.from(mrHex, 'hex'), d])).toString('hex');
}

export function replay(eventLog, imr) {
  let mr = '00'.repeat(48);
  for (const e of eventLog) {
    if (e.imr === imr) {
      mr = extend(mr, e.digest);
    }
  }
  return mr;
}

// V1 runtime event digest: SHA-384(u32le(0x08000001) || ":" || name || ":" || payload).
export function runtimeEventDigest(name, payload) {
  const t = Buffer.alloc(4);
  t.writeUInt32LE(RUNTIME_EVENT_TYPE);
  return sha384(Buffer.concat([t, Buffer.from(':'), Buffer.from(name, 'utf8'), Buffer.from(':'),
    Buffer.from(payload)])).toString('hex');
}

// Right-pad to 64 bytes (GetQuote/Attest report data, spec §4.7).
export function pad64(bytes) {
  const b = Buffer.from(bytes);
  if (b.length > 64) {
    throw new Error('pad64: longer than 64');
  }
  return Buffer.concat([b, Buffer.alloc(64 - b.length)]);
}

// ---- SCALE (V0) ---------------------------------------------------------------------------
class Scale {
  constructor(buf) {
    this.b = Buffer.from(buf);
    this.o = 0;
  }
  need(n) {
    if (n > this.b.length - this.o) {
      throw new Error(`SCALE: truncated at ${this.o} (need ${n})`);
    }
  }
  u8() {
    this.need(1);
    return this.b[this.o++];
  }
  u32() {
    this.need(4);
    const v = this.b.readUInt32LE(this.o);
    this.o += 4;
    return v;
  }
  compact() {
    const m = this.b[this.o] & 3;
    if (m === 0) {
      return this.u8() >> 2;
    }
    if (m === 1) {
      this.need(2);
      const v = this.b.readUInt16LE(this.o) >> 2;
      this.o += 2;
      return v;
    }
    if (m === 2) {
      return this.u32() >>> 2;
    }
    const n = (this.u8() >> 2) + 4;
    if (n > 6) {
      throw new Error('SCALE: compact too large');
    }
    this.need(n);
    const v = this.b.readUIntLE(this.o, n);
    this.o += n;
    return v;
  }
  bytes(n) {
    this.need(n);
    const v = this.b.subarray(this.o, this.o + n);
    this.o += n;
    return Buffer.from(v);
  }
  vecU8() {
    return this.bytes(this.compact());
  }
  str() {
    return this.vecU8().toString('utf8');
  }
  vec(fn) {
    const n = this.compact();
    if (n > this.b.length) {
      throw new Error('SCALE: absurd vector length');
    }
    const out = [];
    for (let i = 0; i < n; i++) {
      out.push(fn());
    }
    return out;
  }
}

function parseV0(buf) {
  const s = new Scale(buf);
  if (s.u8() !== 0) {
    throw new Error('V0: first byte is not 0');
  }
  const variant = s.u8();
  if (variant !== 0) {
    throw new Error(`V0: quote variant ${variant} is not DstackTdx`);
  }
  const quote = s.vecU8();
  const eventLog = s.vec(() => ({
    imr: s.u32(),
    event_type: s.u32(),
    digest: s.vecU8().toString('hex'),
    event: s.str(),
    event_payload: s.vecU8().toString('hex'),
  }));
  const runtimeEvents = s.vec(() => ({ event: s.str(), payload: s.vecU8() }));
  const reportData = s.bytes(64);
  const config = s.str();
  if (s.o !== s.b.length) {
    throw new Error(`V0: ${s.b.length - s.o} trailing bytes`);
  }
  return { version: 0, quote, eventLog, runtimeEvents, reportData, config };
}

// ---- MessagePack (V1) -----------------------------------------------------------------------
function mpDecode(buf) {
  const b = Buffer.from(buf);
  let o = 0;
  const need = (n) => {
    if (n > b.length - o) {
      throw new Error(`msgpack: truncated at ${o}`);
    }
  };
  const uint = (n) => {
    need(n);
    const v = b.readUIntBE(o, n);
    o += n;
    return v;
  };
  const raw = (n) => {
    need(n);
    const v = b.subarray(o, o + n);
    o += n;
    return Buffer.from(v);
  };
  const arr = (n) => Array.from({ length: n }, () => item());
  const map = (n) => {
    const m = {};
    for (let i = 0; i < n; i++) {
      const k = item();
      m[k] = item();
    }
    return m;
  };
  function item() {
    const t = uint(1);
    if (t <= 0x7f) return t;
    if (t >= 0xe0) return t - 0x100;
    if ((t & 0xf0) === 0x80) return map(t & 0x0f);
    if ((t & 0xf0) === 0x90) return arr(t & 0x0f);
    if ((t & 0xe0) === 0xa0) return raw(t & 0x1f).toString('utf8');
    switch (t) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return raw(uint(1));
      case 0xc5: return raw(uint(2));
      case 0xc6: return raw(uint(4));
      case 0xcc: return uint(1);
      case 0xcd: return uint(2);
      case 0xce: return uint(4);
      case 0xcf: return Number(b.readBigUInt64BE((need(8), (o += 8) - 8)));
      case 0xd9: return raw(uint(1)).toString('utf8');
      case 0xda: return raw(uint(2)).toString('utf8');
      case 0xdb: return raw(uint(4)).toString('utf8');
      case 0xdc: return arr(uint(2));
      case 0xdd: return arr(uint(4));
      case 0xde: return map(uint(2));
      case 0xdf: return map(uint(4));
      default: throw new Error(`msgpack: unsupported type 0x${t.toString(16)}`);
    }
  }
  const v = item();
  if (o !== b.length) {
    throw new Error(`msgpack: ${b.length - o} trailing bytes`);
  }
  return v;
}

// bytes given as msgpack bin or as an array of integers (rmp_serde's plain Vec<u8>).
const asBytes = (v) => (Buffer.isBuffer(v) ? v : Buffer.from(v));

function parseV1(buf) {
  const top = mpDecode(buf);
  if (top.version !== 1 || !top.platform || !top.stack) {
    throw new Error('V1: not a version-1 attestation map');
  }
  if (top.platform.kind !== 'tdx') {
    throw new Error(`V1: platform ${top.platform.kind} is not tdx`);
  }
  const pd = top.platform.data;
  const sd = top.stack.data;
  return {
    version: 1,
    quote: asBytes(pd.quote),
    eventLog: (pd.event_log || []).map((e) => ({ ...e, digest: asBytes(e.digest).toString('hex'),
      event_payload: asBytes(e.event_payload).toString('hex') })),
    runtimeEvents: (sd.runtime_events || []).map((e) => ({ event: e.event,
      payload: asBytes(e.payload) })),
    reportData: asBytes(sd.report_data),
    config: sd.config,
  };
}

// Parse a VersionedAttestation (Attest.attestation, certificate extension .1.8).
export function parseAttestation(bytes) {
  const b = Buffer.from(bytes);
  if (b.length === 0) {
    throw new Error('attestation is empty');
  }
  if (b[0] === 0x00) {
    return parseV0(b);
  }
  if ((b[0] & 0xf0) === 0x80 || b[0] === 0xde || b[0] === 0xdf) {
    return parseV1(b);
  }
  throw new Error(`unknown attestation version byte 0x${b[0].toString(16)}`);
}
