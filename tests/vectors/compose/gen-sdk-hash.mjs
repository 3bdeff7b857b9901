// SPDX-License-Identifier: Apache-2.0
// Generates sdk-hash.json: for JSON texts that exercise the SDK normalisation's corners (key
// order by UTF-16 units, array-index keys, "__proto__", JS number printing, escapes, the
// normalize=true preprocessing), the hash @phala/dstack-sdk's getComposeHash returns for
// JSON.parse(text). tests/unit/test_compose.c checks ds_compose_sdk_hash against it. Run:
//   node tests/vectors/compose/gen-sdk-hash.mjs > tests/vectors/compose/sdk-hash.json
import { getComposeHash } from '@phala/dstack-sdk/get-compose-hash';

const texts = [
  '{"runner":"docker-compose","name":"app","manifest_version":2}',
  '{"b":1,"a":{"d":[3,{"z":true,"y":null}],"c":"x"},"A":false}',
  '{"\\uff61":1,"\\ud83d\\ude00":2,"\\u00e9":3,"e":4,"E":5}',
  '{"10":"ten","9":"nine","a":"a","01":"zero-one","4294967294":"max","4294967295":"big","-1":"neg","0":"zero"}',
  '{"__proto__":{"x":1},"keep":"yes","nested":{"__proto__":"s","k":1}}',
  '[1e21,1e20,123456789012345678901,0.1,1.5e-7,0.000001,-0,-0.0,1e300,5e-324,9007199254740993,100,1.0,2.5e+3,-12.375,0.30000000000000004]',
  '{"s":"quote\\" backslash\\\\ nl\\n tab\\t cr\\r bs\\b ff\\f ctl\\u0001\\u001f del\\u007f nul\\u0000 ü 😀 \\u2028"}',
  '{"runner":"bash","bash_script":"echo","docker_compose_file":"x","pre_launch_script":""}',
  '{"runner":"docker-compose","bash_script":"echo","docker_compose_file":"x","pre_launch_script":"ok"}',
  '{"a":[],"b":{},"c":[[],[{}]],"d":"","k":"dup1","k":"dup2"}',
  '"just a string"',
  '"a\\ud83d\\ude00\\u00e9\\u0000"',
  '42',
  'null',
  'true',
  '{"manifest_version":"3","name":"n","runner":"docker-compose","init_script":["a","b"],"requirements":{"platforms":[]},"swap_size":"4G"}',
];

const cases = [];
for (const text of texts) {
  for (const preprocess of [false, true]) {
    cases.push({ json: text, preprocess, hash: getComposeHash(JSON.parse(text), preprocess) });
  }
}
console.log(JSON.stringify({ cases }, null, 2));
