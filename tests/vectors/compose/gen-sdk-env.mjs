// SPDX-License-Identifier: Apache-2.0
// Generates sdk-env.json: encrypted-env blobs made by @phala/dstack-sdk's encryptEnvVars for
// the kms-ratls.md §3.9 app env key (app_id 11*20), so tests/unit/test_compose.c can check that
// our decryption reads what the SDK writes. Run from the repo root:
//   node tests/vectors/compose/gen-sdk-env.mjs > tests/vectors/compose/sdk-env.json
// The blobs are random (fresh ephemeral key and IV per run); any run's output is a valid fixture.
import { encryptEnvVars } from '@phala/dstack-sdk/encrypt-env-vars';

const envPublicKey = '93cf259f68b24775d54290a8ea57cf93efc994d3ff28a7b8ba7a39e9f512302f';
const envCryptKey = 'a7470db8cfdd0fe24134b461d60766afa7c078abe6dce9f2c8a5c44034ca400e';

const cases = [
  { name: 'one', envs: [{ key: 'FOO', value: 'bar' }] },
  {
    name: 'special',
    envs: [
      { key: 'Z_LAST', value: 'line1\nline2 "quoted" $HOME `cmd` back\\slash' },
      { key: 'A_FIRST', value: 'ünïcödé ✓ 😀' },
      { key: 'EMPTY', value: '' },
      { key: 'CTRL', value: '\u0001\t\r' },
    ],
  },
  {
    name: 'filtered',
    envs: [
      { key: 'ALLOWED', value: 'yes' },
      { key: 'NOT_ALLOWED', value: 'no' },
      { key: 'ALLOWED', value: 'later wins' },
    ],
  },
  { name: 'empty', envs: [] },
];

const out = { env_public_key: envPublicKey, env_crypt_key: envCryptKey, cases: [] };
for (const c of cases) {
  out.cases.push({ name: c.name, envs: c.envs, blob: await encryptEnvVars(c.envs, envPublicKey) });
}
console.log(JSON.stringify(out, null, 2));
