// SPDX-License-Identifier: Apache-2.0
// The server-independent helpers the JS SDK exports (getComposeHash,
// verifyEnvEncryptPublicKey[Legacy], to_hex), checked against independent computations with
// node:crypto and @noble/curves, so that the dstack-c tools that produce compose hashes and
// KMS env-encryption signatures can rely on the same definitions.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { getComposeHash, to_hex, verifyEnvEncryptPublicKey,
  verifyEnvEncryptPublicKeyLegacy } from '@phala/dstack-sdk';
import { secp256k1 } from '@noble/curves/secp256k1';
import { keccak_256 } from '@noble/hashes/sha3';

// Deterministic JSON: keys sorted at every level, no whitespace.
function canon(v) {
  if (Array.isArray(v)) return `[${v.map(canon).join(',')}]`;
  if (v && typeof v === 'object') {
    return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canon(v[k])}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

describe('SDK helpers', () => {
  it('getComposeHash = SHA-256 of key-sorted compact JSON; normalize drops unused fields', () => {
    const compose = { runner: 'docker-compose', name: 'app', manifest_version: 2,
      docker_compose_file: 'services: {}', bash_script: 'echo', pre_launch_script: '',
      features: ['kms'], nested: { z: 1, a: [2, { y: true, b: null }] } };
    const want = crypto.createHash('sha256').update(canon(compose)).digest('hex');
    assert.equal(getComposeHash(compose), want);
    const norm = { ...compose };
    delete norm.bash_script;
    delete norm.pre_launch_script;
    assert.equal(getComposeHash(compose, true),
      crypto.createHash('sha256').update(canon(norm)).digest('hex'));
    assert.notEqual(getComposeHash(compose, true), want);
  });

  it('verifyEnvEncryptPublicKey recovers the KMS signer and rejects stale timestamps', () => {
    const kms = secp256k1.utils.randomPrivateKey();
    const kmsPub = Buffer.from(secp256k1.getPublicKey(kms, true)).toString('hex');
    const pub = crypto.randomBytes(32);
    const appId = crypto.randomBytes(20).toString('hex');
    const ts = Math.floor(Date.now() / 1000);
    const tsb = Buffer.alloc(8);
    tsb.writeBigUInt64BE(BigInt(ts));
    const msg = Buffer.concat([Buffer.from('dstack-env-encrypt-pubkey:'),
      Buffer.from(appId, 'hex'), tsb, pub]);
    const sig = secp256k1.sign(keccak_256(msg), kms);
    const sig65 = Buffer.concat([Buffer.from(sig.toCompactRawBytes()), Buffer.from([sig.recovery])]);
    assert.equal(verifyEnvEncryptPublicKey(pub, sig65, appId, ts), `0x${kmsPub}`);
    const otherApp = crypto.randomBytes(20).toString('hex');
    assert.notEqual(verifyEnvEncryptPublicKey(pub, sig65, otherApp, ts), `0x${kmsPub}`);
    assert.equal(verifyEnvEncryptPublicKey(pub, sig65, appId, ts - 3600), null, 'too old');
    assert.equal(verifyEnvEncryptPublicKey(pub, sig65.subarray(0, 64), appId, ts), null);

    const legacyMsg = Buffer.concat([Buffer.from('dstack-env-encrypt-pubkey:'),
      Buffer.from(appId, 'hex'), pub]);
    const ls = secp256k1.sign(keccak_256(legacyMsg), kms);
    const ls65 = Buffer.concat([Buffer.from(ls.toCompactRawBytes()), Buffer.from([ls.recovery])]);
    assert.equal(verifyEnvEncryptPublicKeyLegacy(pub, ls65, appId), `0x${kmsPub}`);
  });

  it('to_hex encodes strings as UTF-8 and bytes as lowercase hex', () => {
    assert.equal(to_hex('test'), '74657374');
    assert.equal(to_hex(Buffer.from([0xab, 0x01])), 'ab01');
    assert.equal(to_hex(new Uint8Array([0xff])), 'ff');
  });
});
