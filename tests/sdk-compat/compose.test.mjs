// SPDX-License-Identifier: Apache-2.0
// `dstack compose` against the JS SDK and against Python: for several docker-compose inputs and
// option sets, the printed compose hash is the SHA-256 of the written bytes and the app id its
// first 20 bytes; the default output is byte-for-byte what vmm-cli.py's json.dumps(indent=4,
// ensure_ascii=False) writes for the same dict (python3 is the oracle); with --normalize the
// file hash equals @phala/dstack-sdk's getComposeHash of the parsed object (with and without
// normalize=true) and both layouts describe the same object. Usage errors name the option.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { getComposeHash } from '@phala/dstack-sdk/get-compose-hash';

const DSTACK = path.resolve(process.env.DS_BIN ?? 'build/bin', 'dstack');
const PYTHON = fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

let dir;
before(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ds-compose-')); });
after(() => { fs.rmSync(dir, { recursive: true, force: true }); });

function file(name, content) {
  const p = path.join(dir, name);
  fs.writeFileSync(p, content);
  return p;
}

function run(args) {
  return spawnSync(DSTACK, ['compose', ...args], { encoding: 'utf8' });
}

// vmm-cli.py's create_app_compose dict (spec host-side.md §1.12), serialised by Python itself.
function pythonOracle(spec) {
  const script = `
import json, sys
s = json.load(sys.stdin)
def env_names(p):
    envs = {}
    if not p:
        return envs
    with open(p, "r") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            k, v = line.split("=", 1)
            envs[k.strip()] = v.strip()
    return envs
envs = env_names(s.get("env_file"))
c = {
    "manifest_version": 2,
    "name": s["name"],
    "runner": "docker-compose",
    "docker_compose_file": open(s["docker_compose"], "rb").read().decode("utf-8"),
    "kms_enabled": s.get("kms", False),
    "gateway_enabled": s.get("gateway", False),
    "local_key_provider_enabled": s.get("local_key_provider", False),
    "key_provider_id": s.get("key_provider_id") or "",
    "public_logs": s.get("public_logs", False),
    "public_sysinfo": s.get("public_sysinfo", False),
    "allowed_envs": [k for k in envs.keys()],
    "no_instance_id": s.get("no_instance_id", False),
    "secure_time": s.get("secure_time", False),
}
if s.get("key_provider"):
    c["key_provider"] = s["key_provider"]
if s.get("prelaunch_script"):
    c["pre_launch_script"] = open(s["prelaunch_script"], "rb").read().decode("utf-8")
if s.get("swap_mb") is not None and s["swap_mb"] > 0:
    c["swap_size"] = s["swap_mb"] * 1024 * 1024
if s.get("event_log_version") == 2:
    c["event_log_version"] = 2
sys.stdout.buffer.write(json.dumps(c, indent=4, ensure_ascii=False).encode("utf-8"))
`;
  const r = spawnSync(PYTHON, ['-c', script], { input: JSON.stringify(spec) });
  assert.equal(r.status, 0, r.stderr?.toString());
  return r.stdout;
}

function argsFor(spec, output, normalize) {
  const a = ['--name', spec.name, '--docker-compose', spec.docker_compose, '--output', output];
  const flags = { kms: '--kms', gateway: '--gateway', local_key_provider: '--local-key-provider',
    public_logs: '--public-logs', public_sysinfo: '--public-sysinfo',
    no_instance_id: '--no-instance-id', secure_time: '--secure-time' };
  for (const [k, f] of Object.entries(flags)) if (spec[k]) a.push(f);
  if (spec.key_provider) a.push('--key-provider', spec.key_provider);
  if (spec.key_provider_id) a.push('--key-provider-id', spec.key_provider_id);
  if (spec.env_file) a.push('--env-file', spec.env_file);
  if (spec.prelaunch_script) a.push('--prelaunch-script', spec.prelaunch_script);
  if (spec.swap) a.push('--swap', spec.swap);
  if (spec.event_log_version) a.push('--event-log-version', String(spec.event_log_version));
  if (normalize) a.push('--normalize');
  return a;
}

function printed(stdout) {
  const hash = /^Compose hash: ([0-9a-f]{64})$/m.exec(stdout)?.[1];
  const appId = /^App ID: ([0-9a-f]{40})$/m.exec(stdout)?.[1];
  assert.ok(hash && appId, `unexpected output: ${stdout}`);
  return { hash, appId };
}

const sha256 = (b) => crypto.createHash('sha256').update(b).digest('hex');

function specs() {
  const yamlPlain = file('plain.yaml', 'services:\n  web:\n    image: nginx:1.27\n    ports: ["8080:80"]\n');
  const yamlOdd = file('odd.yaml', 'services:\r\n  app:\r\n\timage: "a\\\\b"  # ünïcödé 😀 \u2028\r\n' +
    '    command: ["sh", "-c", "printf \'%s\\\\n\' \\"$X\\""]\u0001\u001f\u007f\n');
  const env = file('app.env', '# secrets\nAPI_KEY=abc123\n  DB_URL = "postgres://u:p@h/db" \r\n' +
    'noequals\nAPI_KEY=override\nEMPTY=\n');
  const pre = file('pre.sh', '#!/bin/sh\necho "pre launch" $HOME\n');
  const emptyPre = file('empty.sh', '');
  return [
    { label: 'minimal', name: 'app', docker_compose: yamlPlain },
    { label: 'every option', name: 'ünï app 😀', docker_compose: yamlOdd, kms: true,
      gateway: true, local_key_provider: true, key_provider: 'kms', key_provider_id: 'abCD01',
      public_logs: true, public_sysinfo: true, env_file: env, no_instance_id: true,
      secure_time: true, swap: '1.5G', swap_mb: 1536, prelaunch_script: pre,
      event_log_version: 2 },
    { label: 'tpm, empty prelaunch script, swap 0', name: 'x', docker_compose: yamlOdd,
      key_provider: 'tpm', prelaunch_script: emptyPre, swap: '0', swap_mb: 0,
      event_log_version: 1 },
    { label: 'gateway only, swap in MB', name: 'gw "quoted" \\ name', docker_compose: yamlPlain,
      gateway: true, public_logs: true, swap: '512', swap_mb: 512 },
  ];
}

describe('dstack compose', () => {
  it('writes vmm-cli.py bytes; hash = SHA-256(file); app id = first 20 bytes', () => {
    for (const spec of specs()) {
      const out = path.join(dir, 'out.json');
      const r = run(argsFor(spec, out, false));
      assert.equal(r.status, 0, `${spec.label}: ${r.stderr}`);
      const bytes = fs.readFileSync(out);
      const { hash, appId } = printed(r.stdout);
      assert.equal(hash, sha256(bytes), spec.label);
      assert.equal(appId, hash.slice(0, 40), spec.label);
      const want = pythonOracle(spec);
      assert.equal(bytes.toString('utf8'), want.toString('utf8'), spec.label);
      assert.ok(bytes.equals(want), spec.label);
    }
  });

  it('--normalize: the file hash is getComposeHash of the same object', () => {
    for (const spec of specs()) {
      const plainOut = path.join(dir, 'plain.json');
      const normOut = path.join(dir, 'norm.json');
      const r1 = run(argsFor(spec, plainOut, false));
      const r2 = run(argsFor(spec, normOut, true));
      assert.equal(r1.status, 0, r1.stderr);
      assert.equal(r2.status, 0, r2.stderr);
      const bytes = fs.readFileSync(normOut);
      const obj = JSON.parse(bytes.toString('utf8'));
      const { hash, appId } = printed(r2.stdout);
      assert.equal(hash, sha256(bytes), spec.label);
      assert.equal(getComposeHash(obj), hash, spec.label);
      assert.equal(getComposeHash(obj, true), hash, spec.label);
      assert.equal(appId, hash.slice(0, 40));
      // Same object as the vmm-cli layout, apart from an empty pre_launch_script that the
      // SDK's normalisation drops; the vmm-cli file itself hashes differently (layout).
      const plain = JSON.parse(fs.readFileSync(plainOut, 'utf8'));
      if (plain.pre_launch_script === '') delete plain.pre_launch_script;
      assert.deepEqual(obj, plain, spec.label);
      assert.equal(getComposeHash(plain, true), hash, spec.label);
      assert.notEqual(printed(r1.stdout).hash, hash, spec.label);
    }
  });

  it('usage errors name the option and exit 2', () => {
    const yaml = file('ok.yaml', 'services: {}\n');
    const out = path.join(dir, 'never.json');
    const cases = [
      [['--name', 'a', '--output', out], /--docker-compose FILE is required/],
      [['--docker-compose', yaml, '--output', out], /--name NAME is required/],
      [['--name', 'a', '--docker-compose', yaml], /--output FILE is required/],
      [['--name', 'a', '--docker-compose', path.join(dir, 'missing.yaml'), '--output', out],
        /--docker-compose: cannot read/],
      [['--name', 'a', '--docker-compose', yaml, '--output', out, '--key-provider', 'sgx'],
        /--key-provider: expected none, kms, local or tpm/],
      [['--name', 'a', '--docker-compose', yaml, '--output', out, '--key-provider-id', '0xab'],
        /--key-provider-id: expected hex/],
      [['--name', 'a', '--docker-compose', yaml, '--output', out, '--swap', '0.1M'],
        /--swap: size must be a whole number of MB/],
      [['--name', 'a', '--docker-compose', yaml, '--output', out, '--swap', '4Q'],
        /--swap: invalid size unit/],
      [['--name', 'a', '--docker-compose', yaml, '--output', out, '--event-log-version', '3'],
        /--event-log-version: expected 1 or 2/],
      [['--name', 'a', '--docker-compose', yaml, '--output', out, '--env-file',
        file('e.env', 'A=1\n')], /--env-file: requires --kms/],
      [['--name', 'a', '--docker-compose', yaml, '--output', out, '--kms', '--env-file',
        file('bad.env', 'A=1\nexport B=2\n')], /--env-file: .*line 2: invalid variable name/],
      [['--name', 'a', '--docker-compose', file('bin.yaml', Buffer.from([0xff, 0xfe])),
        '--output', out], /--docker-compose: not valid UTF-8/],
      [['--name', 'a', '--docker-compose', yaml, '--output', out, '--kms', '--kms'],
        /--kms: given more than once/],
      [['--name', 'a', '--docker-compose', yaml, '--output', path.join(dir, 'no/such/dir.json')],
        /--output: cannot write/],
    ];
    for (const [args, re] of cases) {
      const r = run(args);
      assert.equal(r.status, 2, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, re, args.join(' '));
      assert.equal(fs.existsSync(out), false);
    }
  });
});
