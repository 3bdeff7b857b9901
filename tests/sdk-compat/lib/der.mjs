// SPDX-License-Identifier: Apache-2.0
// A small DER walker for the SDK tests: reads TLVs with bounds checks, decodes OIDs, and finds
// the X.509 v3 extensions of a certificate so the tests can read dstack's custom extensions
// (1.3.6.1.4.1.62397.1.*) without trusting any of the code under test.

// Read one TLV at off inside buf[off..end). Returns { tag, cls, constructed, start, len, end,
// hdr } where start is the offset of the value and end the offset just after it.
export function readTlv(buf, off, end = buf.length) {
  if (off + 2 > end) {
    throw new Error(`DER: truncated header at ${off}`);
  }
  const first = buf[off];
  if ((first & 0x1f) === 0x1f) {
    throw new Error('DER: high tag numbers are not used in certificates');
  }
  let p = off + 1;
  let len = buf[p++];
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || p + n > end) {
      throw new Error(`DER: bad length at ${off}`);
    }
    len = 0;
    for (let i = 0; i < n; i++) {
      len = len * 256 + buf[p++];
    }
  }
  if (len > end - p) {
    throw new Error(`DER: value overruns its parent at ${off}`);
  }
  return { tag: first, cls: first >> 6, constructed: (first & 0x20) !== 0, start: p, len,
    end: p + len, hdr: p - off };
}

// Children of a constructed TLV.
export function children(buf, tlv) {
  const out = [];
  let p = tlv.start;
  while (p < tlv.end) {
    const c = readTlv(buf, p, tlv.end);
    out.push(c);
    p = c.end;
  }
  return out;
}

export function value(buf, tlv) {
  return buf.subarray(tlv.start, tlv.end);
}

export function decodeOid(bytes) {
  if (bytes.length === 0) {
    throw new Error('DER: empty OID');
  }
  const parts = [];
  const first = bytes[0];
  parts.push(first < 80 ? Math.floor(first / 40) : 2, first < 80 ? first % 40 : first - 80);
  let v = 0;
  for (let i = 1; i < bytes.length; i++) {
    v = v * 128 + (bytes[i] & 0x7f);
    if (!(bytes[i] & 0x80)) {
      parts.push(v);
      v = 0;
    }
  }
  return parts.join('.');
}

// The extensions of a DER certificate: Map oid -> { critical, value (extnValue contents) }.
export function certExtensions(der) {
  const cert = readTlv(der, 0);
  if (cert.tag !== 0x30 || cert.end !== der.length) {
    throw new Error('DER: certificate is not one SEQUENCE');
  }
  const [tbs] = children(der, cert);
  const exts = new Map();
  for (const f of children(der, tbs)) {
    if (f.tag !== 0xa3) {
      continue;
    }
    const [list] = children(der, f);
    for (const ext of children(der, list)) {
      const parts = children(der, ext);
      const oid = decodeOid(value(der, parts[0]));
      let critical = false;
      let octets = parts[1];
      if (octets.tag === 0x01) {
        critical = der[octets.start] !== 0;
        octets = parts[2];
      }
      if (octets.tag !== 0x04) {
        throw new Error(`DER: extension ${oid} has no OCTET STRING`);
      }
      if (exts.has(oid)) {
        throw new Error(`DER: duplicate extension ${oid}`);
      }
      exts.set(oid, { critical, value: Buffer.from(value(der, octets)) });
    }
  }
  return exts;
}

// dstack's custom extensions wrap the payload in one more OCTET STRING (spec §4.6).
export function unwrapOctetString(bytes) {
  const t = readTlv(bytes, 0);
  if (t.tag !== 0x04 || t.end !== bytes.length) {
    throw new Error('DER: payload is not one OCTET STRING');
  }
  return Buffer.from(value(bytes, t));
}

// PEM (one block) to DER bytes.
export function pemToDer(pem) {
  const b64 = pem.replace(/-----(BEGIN|END) [A-Z ]+-----/g, '').replace(/\s+/g, '');
  return Buffer.from(b64, 'base64');
}

// Split a PEM bundle into its blocks.
export function splitPem(text) {
  return text.match(/-----BEGIN [A-Z ]+-----[\s\S]*?-----END [A-Z ]+-----\n?/g) || [];
}
