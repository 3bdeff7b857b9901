// SPDX-License-Identifier: Apache-2.0
// Generates noble-getkey.tsv: GetKey and Sign results computed with @noble/curves and
// @noble/hashes (an implementation independent of lib/keys), per guest-agent-api.md §4.2-4.4.
// Run from the repo root: node tests/vectors/keys/gen-noble-vectors.cjs
// Columns: kind, k256_key, path (hex), purpose (hex) or data (hex), algorithm, key, pubkey, signature.
const { createRequire } = require('module');
const path = require('path');
const req = createRequire(path.resolve(__dirname, '../../../package.json'));
const { secp256k1 } = req('@noble/curves/secp256k1');
const { ed25519 } = req('@noble/curves/ed25519');
const { hkdf } = req('@noble/hashes/hkdf');
const { sha256 } = req('@noble/hashes/sha256');
const { keccak_256 } = req('@noble/hashes/sha3');
const { bytesToHex, hexToBytes, utf8ToBytes } = req('@noble/hashes/utils');

const derive = (k, p) => hkdf(sha256, k, utf8ToBytes('RATLS'), utf8ToBytes(p), 32);
const rows = [];
const keys = ['d6e88992cdeeee35fe70b5db61ab66cdb191fb9b6ec9313757ef162dd7214d5d',
              '1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b'];
const paths = ['', 'a', '/x/y/z', 'vms', 'ünïcode/路径', 'long/path/with/many/segments/0123456789'];
const purposes = ['', 'p', 'signing', 'eth:0x1', 'ü'];
for (const kh of keys) {
  const k256 = hexToBytes(kh);
  for (const p of paths) for (const pu of purposes) for (const alg of ['secp256k1', 'ed25519']) {
    const key = derive(k256, p);
    const pub = alg === 'ed25519' ? ed25519.getPublicKey(key) : secp256k1.getPublicKey(key, true);
    const s = secp256k1.sign(keccak_256(utf8ToBytes(pu + ':' + bytesToHex(pub))), k256);
    const sig = bytesToHex(s.toCompactRawBytes()) + s.recovery.toString(16).padStart(2, '0');
    rows.push(['getkey', kh, bytesToHex(utf8ToBytes(p)), bytesToHex(utf8ToBytes(pu)), alg,
               bytesToHex(key), bytesToHex(pub), sig]);
  }
  const key = derive(k256, 'vms');
  for (const d of ['', 'hello', 'test data', '0'.repeat(200)]) {
    const data = utf8ToBytes(d);
    rows.push(['sign', kh, '', bytesToHex(data), 'ed25519', bytesToHex(key),
               bytesToHex(ed25519.getPublicKey(key)), bytesToHex(ed25519.sign(data, key))]);
    rows.push(['sign', kh, '', bytesToHex(data), 'secp256k1', bytesToHex(key),
               bytesToHex(secp256k1.getPublicKey(key, true)),
               bytesToHex(secp256k1.sign(sha256(data), key).toCompactRawBytes())]);
  }
  const digest = sha256(utf8ToBytes('prehashed'));
  rows.push(['sign', kh, '', bytesToHex(digest), 'secp256k1_prehashed', bytesToHex(key),
             bytesToHex(secp256k1.getPublicKey(key, true)),
             bytesToHex(secp256k1.sign(digest, key).toCompactRawBytes())]);
}
require('fs').writeFileSync(path.join(__dirname, 'noble-getkey.tsv'),
  rows.map((r) => r.map((c) => c === '' ? '-' : c).join('\t')).join('\n') + '\n');
console.log(`${rows.length} rows`);
