// SPDX-License-Identifier: Apache-2.0
// GetKey / Sign signature chains of dstack-guest-agent's simulator mode, checked with an
// independent secp256k1 + Keccak implementation (@noble/curves, @noble/hashes), as the Go
// SDK's ethereum test does (spec guest-agent-api.md §4.3):
//   sig0 over keccak256(purpose ":" hex(pubkey)) recovers to the app root key;
//   sig1 over keccak256("dstack-kms-issued:" app_id app_root_pub) recovers to the KMS key,
//   here the development KMS root k256 = SHA-256(label) that agent_keys.c documents.
// Usage: node test_guest_agent_chain.cjs getkey.json info.json sign.json   (env DS_SRC)
'use strict';
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const nm = path.join(process.env.DS_SRC || '.', 'node_modules');
const { secp256k1 } = require(path.join(nm, '@noble/curves/secp256k1.js'));
const { keccak_256 } = require(path.join(nm, '@noble/hashes/sha3.js'));

const hex = (b) => Buffer.from(b).toString('hex');
const unhex = (s) => Uint8Array.from(Buffer.from(s, 'hex'));
let failures = 0;
function check(cond, name, detail) {
  console.log(`  ${cond ? 'ok  ' : 'FAIL'} - ${name}${cond || !detail ? '' : ': ' + detail}`);
  if (!cond) failures++;
}
function recover(sig65, digest) {
  const s = secp256k1.Signature.fromCompact(sig65.slice(0, 64)).addRecoveryBit(sig65[64]);
  return s.recoverPublicKey(digest).toRawBytes(true);
}

const [getkeyFile, infoFile, signFile] = process.argv.slice(2);
const getkey = JSON.parse(fs.readFileSync(getkeyFile));
const info = JSON.parse(fs.readFileSync(infoFile));
const sign = JSON.parse(fs.readFileSync(signFile));

// GetKey("/test/path", "test-purpose")
const key = unhex(getkey.key);
const pub = secp256k1.getPublicKey(key, true);
const [sig0, sig1] = getkey.signature_chain.map(unhex);
check(sig0.length === 65 && sig0[64] <= 1 && sig1.length === 65, 'chain entries are r||s||v, v in {0,1}');
const msg = Buffer.from(`test-purpose:${hex(pub)}`);
const appPub = recover(sig0, keccak_256(msg));
const sObj = secp256k1.Signature.fromCompact(sig0.slice(0, 64));
check(!sObj.hasHighS(), 'sig0 is low-S');
const devK256 = crypto.createHash('sha256')
  .update('dstack-c development KMS root k256 key v1 (INSECURE)').digest();
const kmsExpected = secp256k1.getPublicKey(devK256, true);
const issued = Buffer.concat([Buffer.from('dstack-kms-issued:'), unhex(info.app_id), appPub]);
const kmsPub = recover(sig1, keccak_256(issued));
check(hex(kmsPub) === hex(kmsExpected), 'sig1 recovers to the development KMS root key',
  `${hex(kmsPub)} != ${hex(kmsExpected)}`);

// Sign(secp256k1): chain[1] is GetKey("vms", "signing") sig0 by the same app key.
const sPub = unhex(sign.public_key);
const sMsg = Buffer.from(`signing:${sign.public_key}`);
const sApp = recover(unhex(sign.signature_chain[1]), keccak_256(sMsg));
check(hex(sApp) === hex(appPub), 'Sign chain[1] recovers to the same app root key');
check(sign.signature_chain[2] === getkey.signature_chain[1], 'Sign chain[2] = k256_signature');
check(sPub.length === 33, 'Sign public key is compressed SEC1');

process.exit(failures ? 1 : 0);
