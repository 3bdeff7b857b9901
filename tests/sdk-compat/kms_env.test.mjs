// SPDX-License-Identifier: Apache-2.0
// The env-encryption public key our KMS hands out (GetAppEnvEncryptPubKey, spec kms-ratls.md
// §3.6 and §7), fetched with `dstack kms env-pubkey`, checked by the official JS SDK
// (@phala/dstack-sdk verifyEnvEncryptPublicKey / verifyEnvEncryptPublicKeyLegacy): both
// signatures must recover to the KMS k256 key that `dstack kms meta` reports, and a flipped
// byte in the key or a signature must not. Runs `dstack-kms --dev` on a temporary state
// directory and a free loopback port.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { verifyEnvEncryptPublicKey, verifyEnvEncryptPublicKeyLegacy } from '@phala/dstack-sdk';

import { binDir, freePort } from './lib/agent.mjs';

const run = promisify(execFile);
const START_TIMEOUT_MS = 30000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const hexBytes = (h) => Uint8Array.from(Buffer.from(h, 'hex'));

function flip(bytes, i) {
  const out = Uint8Array.from(bytes);
  out[i] ^= 0x01;
  return out;
}

// `dstack ARGS...` -> { code, stdout, stderr } (never throws on a non-zero exit).
async function dstack(...args) {
  try {
    const { stdout, stderr } = await run(path.join(binDir(), 'dstack'), args);
    return { code: 0, stdout, stderr };
  } catch (e) {
    return { code: e.code, stdout: e.stdout || '', stderr: e.stderr || '' };
  }
}

describe('KMS env-encrypt public key vs @phala/dstack-sdk', () => {
  let kms;
  let url;
  let meta;
  let output = '';
  let dir;
  const appId = crypto.randomBytes(20).toString('hex');

  before(async () => {
    const bin = path.join(binDir(), 'dstack-kms');
    assert.ok(fs.existsSync(bin), `${bin} does not exist (build the KMS first)`);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ds-kms-sdk-'));
    const port = await freePort();
    url = `https://127.0.0.1:${port}`;
    kms = spawn(bin, ['--dev', '--state-dir', path.join(dir, 'state'), '--listen',
      `127.0.0.1:${port}`], { stdio: ['ignore', 'pipe', 'pipe'], cwd: dir });
    let exited = null;
    kms.stdout.on('data', (d) => { output += d; });
    kms.stderr.on('data', (d) => { output += d; });
    kms.on('exit', (code, sig) => { exited = { code, sig }; });
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      if (exited) {
        throw new Error(`dstack-kms exited early (${JSON.stringify(exited)}):\n${output}`);
      }
      const r = await dstack('kms', 'meta', url, '--json');
      if (r.code === 0) {
        meta = JSON.parse(r.stdout);
        break;
      }
      if (Date.now() > deadline) {
        throw new Error(`dstack-kms did not answer GetMeta in ${START_TIMEOUT_MS} ms:\n` +
          `${r.stderr}\n${output}`);
      }
      await sleep(200);
    }
  });

  after(async () => {
    if (kms && kms.exitCode === null) {
      const done = new Promise((r) => kms.once('exit', r));
      kms.kill('SIGTERM');
      await Promise.race([done, sleep(5000)]);
      if (kms.exitCode === null) {
        kms.kill('SIGKILL');
      }
    }
    if (dir) {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('GetMeta reports a compressed k256 key, a root CA and dev mode', () => {
    assert.match(meta.k256_pubkey, /^0[23][0-9a-f]{64}$/);
    assert.match(meta.ca_cert, /^-----BEGIN CERTIFICATE-----/);
    assert.equal(meta.is_dev, true);
  });

  it('signature_v1 and the legacy signature recover to the KMS k256 key in the SDK', async () => {
    const r = await dstack('kms', 'env-pubkey', url, appId, '--json');
    assert.equal(r.code, 0, r.stderr);
    const e = JSON.parse(r.stdout);
    assert.equal(e.app_id, appId);
    assert.match(e.public_key, /^[0-9a-f]{64}$/);
    assert.match(e.signature, /^[0-9a-f]{130}$/);
    assert.match(e.signature_v1, /^[0-9a-f]{130}$/);
    assert.equal(typeof e.timestamp, 'number');
    assert.ok(Math.abs(e.timestamp - Date.now() / 1000) < 120, `timestamp ${e.timestamp}`);
    assert.equal(e.kms_k256_pubkey, meta.k256_pubkey);

    const kmsKey = `0x${meta.k256_pubkey}`;
    const pub = hexBytes(e.public_key);
    assert.equal(verifyEnvEncryptPublicKey(pub, hexBytes(e.signature_v1), appId, e.timestamp),
      kmsKey);
    assert.equal(verifyEnvEncryptPublicKey(pub, hexBytes(e.signature_v1), `0x${appId}`,
      BigInt(e.timestamp)), kmsKey);
    assert.equal(verifyEnvEncryptPublicKeyLegacy(pub, hexBytes(e.signature), appId), kmsKey);
  });

  it('a flipped byte in the key, a signature, the app id or the timestamp fails', async () => {
    const r = await dstack('kms', 'env-pubkey', url, appId, '--json');
    assert.equal(r.code, 0, r.stderr);
    const e = JSON.parse(r.stdout);
    const kmsKey = `0x${meta.k256_pubkey}`;
    const pub = hexBytes(e.public_key);
    const sig1 = hexBytes(e.signature_v1);
    const sig0 = hexBytes(e.signature);
    const otherApp = appId.slice(0, 38) + (appId.endsWith('0') ? '1' : '0');
    // The SDK recovers *some* key from most corrupted signatures: it must not be the KMS key.
    const notKms = (v) => assert.notEqual(v, kmsKey);
    for (const i of [0, 13, 31]) {
      notKms(verifyEnvEncryptPublicKey(flip(pub, i), sig1, appId, e.timestamp));
      notKms(verifyEnvEncryptPublicKeyLegacy(flip(pub, i), sig0, appId));
    }
    for (const i of [0, 40, 63]) {
      notKms(verifyEnvEncryptPublicKey(pub, flip(sig1, i), appId, e.timestamp));
      notKms(verifyEnvEncryptPublicKeyLegacy(pub, flip(sig0, i), appId));
    }
    notKms(verifyEnvEncryptPublicKey(pub, sig1, otherApp, e.timestamp));
    notKms(verifyEnvEncryptPublicKey(pub, sig1, appId, e.timestamp - 1));
    // The legacy signature is not a v1 signature (different message).
    notKms(verifyEnvEncryptPublicKey(pub, sig0, appId, e.timestamp));
  });

  it('different apps get different keys, the same app the same key', async () => {
    const other = crypto.randomBytes(20).toString('hex');
    const a1 = JSON.parse((await dstack('kms', 'env-pubkey', url, appId, '--json')).stdout);
    const a2 = JSON.parse((await dstack('kms', 'env-pubkey', url, appId, '--json')).stdout);
    const b = JSON.parse((await dstack('kms', 'env-pubkey', url, other, '--json')).stdout);
    assert.equal(a1.public_key, a2.public_key);
    assert.notEqual(a1.public_key, b.public_key);
    assert.equal(verifyEnvEncryptPublicKey(hexBytes(b.public_key), hexBytes(b.signature_v1),
      other, b.timestamp), `0x${meta.k256_pubkey}`);
  });

  it('the CLI refuses signatures that do not recover to a pinned key', async () => {
    // A valid compressed point that is not the KMS key: the generator of secp256k1.
    const g = '0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798';
    const r = await dstack('kms', 'env-pubkey', url, appId, '--kms-pubkey', g, '--json');
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /signature was made by 0[23][0-9a-f]{64}, not by the KMS k256 key/);
    const ok = await dstack('kms', 'env-pubkey', url, appId, '--kms-pubkey', meta.k256_pubkey,
      '--json');
    assert.equal(ok.code, 0, ok.stderr);
  });

  it('bad app ids are usage errors', async () => {
    const r = await dstack('kms', 'env-pubkey', url, 'abcd');
    assert.equal(r.code, 2);
    assert.match(r.stderr, /APP_ID: expected 20 bytes of hex/);
  });
});
