// SPDX-License-Identifier: Apache-2.0
// Shared assertions for the SDK tests: the GetKey / Sign signature chains (secp256k1 recovery
// over Keccak-256, spec §4.3-§4.4) and the GetTlsKey / DeriveKey certificate profile with the
// RA-TLS binding of its attestation extension (spec §4.6).
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { secp256k1 } from '@noble/curves/secp256k1';
import { ed25519 } from '@noble/curves/ed25519';
import { keccak_256 } from '@noble/hashes/sha3';

import { certExtensions, unwrapOctetString } from './der.mjs';
import { parseAttestation, quoteFields, replay, runtimeEventDigest, sha512 } from './tdx.mjs';

export const OID = {
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  san: '2.5.29.17',
  quoteLegacy: '1.3.6.1.4.1.62397.1.1',
  specialUsage: '1.3.6.1.4.1.62397.1.4',
  attestation: '1.3.6.1.4.1.62397.1.8',
  appInfo: '1.3.6.1.4.1.62397.1.9',
};
const EKU_SERVER = '1.3.6.1.5.5.7.3.1';
const EKU_CLIENT = '1.3.6.1.5.5.7.3.2';

export const hex = (b) => Buffer.from(b).toString('hex');
export const isHex = (s, bytes) => typeof s === 'string' && /^[0-9a-f]*$/.test(s) &&
  (bytes === undefined ? s.length % 2 === 0 : s.length === bytes * 2);

// Recover the compressed secp256k1 key from a 65-byte r||s||v signature over digest.
export function recover(sig65, digest) {
  assert.equal(sig65.length, 65, 'recoverable signature is 65 bytes');
  const v = sig65[64];
  assert.ok(v === 0 || v === 1, `recovery id is 0 or 1, got ${v}`);
  const sig = secp256k1.Signature.fromCompact(Buffer.from(sig65.subarray(0, 64)).toString('hex'))
    .addRecoveryBit(v);
  assert.equal(sig.hasHighS(), false, 'signature is low-S normalized');
  return Buffer.from(sig.recoverPublicKey(digest).toRawBytes(true));
}

// The public key the chain signs for a derived key: compressed secp256k1 or Ed25519.
export function derivedPublicKey(key, algorithm) {
  return algorithm === 'ed25519' ? Buffer.from(ed25519.getPublicKey(key))
    : Buffer.from(secp256k1.getPublicKey(key, true));
}

// Check a [sig0, kms_sig] chain for `pub` under `purpose`; returns { appPub, kmsPub }.
export function checkChain(chain, purpose, pub, appIdHex) {
  assert.ok(chain.length >= 2, `signature chain has at least 2 entries (got ${chain.length})`);
  const msg0 = keccak_256(Buffer.from(`${purpose}:${hex(pub)}`, 'utf8'));
  const appPub = recover(Buffer.from(chain[0]), msg0);
  const msg1 = keccak_256(Buffer.concat([Buffer.from('dstack-kms-issued:'),
    Buffer.from(appIdHex, 'hex'), appPub]));
  const kmsPub = recover(Buffer.from(chain[1]), msg1);
  return { appPub: hex(appPub), kmsPub: hex(kmsPub) };
}

function bitStringHasDigitalSignatureOnly(v) {
  // KeyUsage BIT STRING: 03 02 07 80 = digitalSignature only.
  return hex(v) === '03020780';
}

// Full certificate profile check of a GetTlsKey / DeriveKey response. Returns
// { leaf, priv, attestation } for further checks.
export function checkTlsKey(res, opts) {
  const { subject = '', altNames = [], raTls = false, serverAuth = false, clientAuth = false,
    appInfo = false, notBefore, notAfter, chainLength = 2 } = opts;
  assert.equal(typeof res.key, 'string');
  assert.ok(res.key.startsWith('-----BEGIN PRIVATE KEY-----\n'), 'key is PKCS#8 PEM');
  assert.ok(res.key.endsWith('-----END PRIVATE KEY-----\n'), 'PEM ends with a newline');
  const priv = crypto.createPrivateKey(res.key);
  assert.equal(priv.asymmetricKeyType, 'ec');
  assert.equal(priv.asymmetricKeyDetails.namedCurve, 'prime256v1');
  const pkcs8 = priv.export({ type: 'pkcs8', format: 'der' });
  assert.equal(pkcs8.length, 138, 'PKCS#8 DER of a P-256 key is 138 bytes');
  if (res.asUint8Array) {
    assert.deepEqual(Buffer.from(res.asUint8Array()), pkcs8, 'asUint8Array() is the DER');
    assert.equal(res.asUint8Array(32).length, 32);
  }
  assert.ok(Array.isArray(res.certificate_chain));
  assert.equal(res.certificate_chain.length, chainLength, 'chain = [leaf, local CA]');
  const leaf = new crypto.X509Certificate(res.certificate_chain[0]);
  const ca = new crypto.X509Certificate(res.certificate_chain[res.certificate_chain.length - 1]);
  assert.ok(leaf.checkPrivateKey(priv), 'leaf certificate holds the returned key');
  assert.ok(leaf.verify(ca.publicKey), 'leaf is signed by the returned CA');
  assert.equal(ca.ca, true, 'last chain entry is a CA');
  assert.equal(leaf.ca, false);
  assert.ok(leaf.subject === `CN=${subject}` || (subject === '' && leaf.subject === ''),
    `subject is CN=${subject} only (got ${JSON.stringify(leaf.subject)})`);

  const exts = certExtensions(leaf.raw);
  const ku = exts.get(OID.keyUsage);
  assert.ok(ku, 'KeyUsage present');
  assert.ok(bitStringHasDigitalSignatureOnly(ku.value), `KeyUsage digitalSignature (${hex(ku.value)})`);
  assert.equal(ku.critical, true, 'KeyUsage is critical (rcgen)');

  const wantSan = altNames.map((n) => (/^[0-9.]+$|:/.test(n) ? `IP Address:${n}` : `DNS:${n}`));
  if (wantSan.length === 0) {
    assert.equal(exts.has(OID.san), false, 'no SAN extension without alt names');
  } else {
    assert.equal(leaf.subjectAltName, wantSan.join(', '));
  }
  const eku = [];
  if (serverAuth) eku.push(EKU_SERVER);
  if (clientAuth) eku.push(EKU_CLIENT);
  if (eku.length === 0) {
    assert.equal(exts.has(OID.extKeyUsage), false, 'no EKU extension without usages');
  } else {
    assert.deepEqual([...(leaf.keyUsage || [])].sort(), eku.sort(), 'extended key usages');
  }
  const special = exts.get(OID.specialUsage);
  assert.ok(special, 'special-usage extension 1.3.6.1.4.1.62397.1.4 present');
  assert.equal(unwrapOctetString(special.value).toString('latin1'), 'app:custom');

  if (notBefore !== undefined) {
    assert.equal(Date.parse(leaf.validFrom) / 1000, notBefore, 'notBefore as requested');
  } else {
    assert.equal(new Date(leaf.validFrom).toISOString(), '1975-01-01T00:00:00.000Z',
      'default notBefore is 1975-01-01');
  }
  if (notAfter !== undefined) {
    assert.equal(Date.parse(leaf.validTo) / 1000, notAfter, 'notAfter as requested');
  } else {
    const days = (Date.parse(leaf.validTo) - Date.now()) / 86400000;
    assert.ok(days > 3649 && days < 3651, `default notAfter is now + 3650 days (${days})`);
  }

  let attestation;
  assert.equal(exts.has(OID.quoteLegacy), false, 'legacy quote extension .1.1 is not written');
  if (raTls) {
    const ext = exts.get(OID.attestation);
    assert.ok(ext, 'RA-TLS attestation extension 1.3.6.1.4.1.62397.1.8 present');
    assert.equal(ext.critical, false);
    attestation = parseAttestation(unwrapOctetString(ext.value));
    const spki = leaf.publicKey.export({ type: 'spki', format: 'der' });
    assert.equal(spki.length, 91);
    const want = sha512(Buffer.concat([Buffer.from('ratls-cert:'), spki])).toString('hex');
    const q = quoteFields(attestation.quote);
    assert.equal(q.reportData, want, 'quote report_data = SHA-512("ratls-cert:" || SPKI)');
    assert.equal(hex(attestation.reportData), want, 'attestation report_data field matches');
    // The stripped log keeps every imr-3 event with its payload: RTMR3 replays from them.
    const rt = attestation.eventLog.filter((e) => e.imr === 3).map((e) => ({ imr: 3,
      digest: runtimeEventDigest(e.event, Buffer.from(e.event_payload, 'hex')) }));
    assert.ok(rt.length > 0, 'stripped event log keeps the runtime events');
    assert.equal(replay(rt, 3), q.rtmrs[3], 'RTMR3 replays from the kept runtime events');
  } else {
    assert.equal(exts.has(OID.attestation), false, 'no attestation extension without ra_tls');
  }
  assert.equal(exts.has(OID.appInfo), appInfo, `app-info extension .1.9 present = ${appInfo}`);
  return { leaf, priv, attestation };
}
