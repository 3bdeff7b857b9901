// SPDX-License-Identifier: Apache-2.0
// The legacy tappd API (tappd.sock, /prpc/Tappd.<Method>) through the official JS SDK's
// TappdClient and raw requests: DeriveKey certificates, TdxQuote with every hash algorithm
// (report data = H(prefix ":" data) zero-padded, spec §4.7), raw quotes, RawQuote,
// DeriveK256Key equal to GetKey, Info and Version, and the server-side rejections.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { DstackClient, TappdClient } from '@phala/dstack-sdk';
import { keccak_256, keccak_384, keccak_512 } from '@noble/hashes/sha3';

import { rawRequest, startAgent } from './lib/agent.mjs';
import { checkTlsKey, hex, isHex } from './lib/checks.mjs';
import { pad64, quoteFields } from './lib/tdx.mjs';

const HASHES = {
  sha256: (b) => crypto.createHash('sha256').update(b).digest(),
  sha384: (b) => crypto.createHash('sha384').update(b).digest(),
  sha512: (b) => crypto.createHash('sha512').update(b).digest(),
  'sha3-256': (b) => crypto.createHash('sha3-256').update(b).digest(),
  'sha3-384': (b) => crypto.createHash('sha3-384').update(b).digest(),
  'sha3-512': (b) => crypto.createHash('sha3-512').update(b).digest(),
  keccak256: (b) => Buffer.from(keccak_256(b)),
  keccak384: (b) => Buffer.from(keccak_384(b)),
  keccak512: (b) => Buffer.from(keccak_512(b)),
};

describe('TappdClient over the tappd socket', () => {
  let agent;
  let tappd;

  before(async () => {
    agent = await startAgent();
    process.env.TAPPD_SIMULATOR_ENDPOINT = agent.tappdSocket;
    tappd = new TappdClient();
    delete process.env.TAPPD_SIMULATOR_ENDPOINT;
  });
  after(async () => {
    if (agent) {
      await agent.stop();
    }
  });

  it('isReachable() and /prpc/Tappd.Info, /prpc/Tappd.Version', async () => {
    assert.equal(await tappd.isReachable(), true);
    const i = await rawRequest(agent.tappdSocket, '/prpc/Tappd.Info', { body: '{}' });
    assert.equal(i.status, 200);
    assert.ok(isHex(i.json.app_id, 20));
    const dstackInfo = await new DstackClient(agent.socket).info();
    assert.equal(i.json.app_id, dstackInfo.app_id, 'same AppInfo as dstack.sock');
    assert.equal(JSON.parse(i.json.tcb_info).mrtd, dstackInfo.tcb_info.mrtd);
    const v = await rawRequest(agent.tappdSocket, '/prpc/Tappd.Version', { method: 'GET' });
    assert.equal(v.status, 200);
    assert.equal(typeof v.json.version, 'string');
  });

  it('deriveKey() gives a deterministic per-path P-256 key and a CN=subject certificate', async () => {
    const a = await tappd.deriveKey('/', 'test');
    checkTlsKey(a, { subject: 'test' });
    const b = await tappd.deriveKey('/', 'test');
    assert.equal(a.key, b.key, 'DeriveKey is deterministic per path');
    const c = await tappd.deriveKey('/other', 'test', ['example.com']);
    assert.notEqual(c.key, a.key, 'another path gives another key');
    checkTlsKey(c, { subject: 'test', altNames: ['example.com'] });
    // The trim rule: /prpc/DeriveKey is the same method (spec §2.1).
    const t = await rawRequest(agent.tappdSocket, '/prpc/DeriveKey', { body: JSON.stringify({
      path: '/', subject: 'test' }) });
    assert.equal(t.status, 200);
    assert.equal(t.json.key, a.key);
    const r = await rawRequest(agent.tappdSocket, '/prpc/Tappd.DeriveKey', { body: JSON.stringify({
      path: '/', subject: 'test', random_seed: true }) });
    assert.equal(r.status, 200);
    assert.notEqual(r.json.key, a.key, 'random_seed gives a fresh key');
  });

  it('tdxQuote() default is sha512 over "app-data:" || data', async () => {
    const q = await tappd.tdxQuote('test data');
    assert.equal(q.hash_algorithm, 'sha512');
    assert.equal(q.prefix, 'app-data');
    assert.equal(quoteFields(Buffer.from(q.quote, 'hex')).reportData,
      '6c1ddeaf2fb0c8bd7fe76068ad98976fc165bc734fdbf7a43d2d3c0a951ae6fe14ab4da7dab60cfed70ac16' +
      '2c5da37731a4f52ccc831b72675cc6c10b168be10', 'spec §4.7 vector');
    const log = JSON.parse(q.event_log);
    assert.ok(Array.isArray(log) && log.length > 0);
    assert.deepEqual(q.replayRtmrs(), quoteFields(Buffer.from(q.quote, 'hex')).rtmrs);
  });

  it('tdxQuote() with every hash algorithm', async () => {
    const data = Buffer.from('test data');
    const failed = [];
    for (const [alg, h] of Object.entries(HASHES)) {
      try {
        const q = await tappd.tdxQuote(data, alg);
        const want = pad64(h(Buffer.concat([Buffer.from('app-data:'), data]))).toString('hex');
        assert.equal(quoteFields(Buffer.from(q.quote, 'hex')).reportData, want, alg);
        assert.equal(q.hash_algorithm, alg);
        assert.equal(q.prefix, 'app-data');
      } catch (err) {
        failed.push(`${alg}: ${err.message.split('\n')[0]}`);
      }
    }
    assert.deepEqual(failed, [], 'every hash algorithm of spec §4.7 works');
    const p = await rawRequest(agent.tappdSocket, '/prpc/Tappd.TdxQuote', { body: JSON.stringify({
      report_data: hex(data), hash_algorithm: 'sha256', prefix: 'custom' }) });
    assert.equal(p.status, 200);
    assert.equal(p.json.prefix, 'custom');
    assert.equal(quoteFields(Buffer.from(p.json.quote, 'hex')).reportData,
      pad64(HASHES.sha256(Buffer.from('custom:test data'))).toString('hex'));
    const bad = await rawRequest(agent.tappdSocket, '/prpc/Tappd.TdxQuote', { body: JSON.stringify({
      report_data: hex(data), hash_algorithm: 'md5' }) });
    assert.equal(bad.status, 400);
    assert.match(bad.json?.error ?? '', /invalid hash algorithm/);
  });

  it('tdxQuote(raw) left-pads on the client; RawQuote needs exactly 64 bytes', async () => {
    const q = await tappd.tdxQuote(Buffer.from('abcd'), 'raw');
    assert.equal(q.hash_algorithm, 'raw');
    assert.equal(q.prefix, '');
    assert.equal(quoteFields(Buffer.from(q.quote, 'hex')).reportData,
      '00'.repeat(60) + hex(Buffer.from('abcd')), 'client left-pads raw report data');
    await assert.rejects(tappd.tdxQuote(Buffer.alloc(65), 'raw'), /too large/);
    const rd = crypto.randomBytes(64);
    const rq = await rawRequest(agent.tappdSocket, '/prpc/Tappd.RawQuote', {
      body: JSON.stringify({ report_data: hex(rd) }) });
    assert.equal(rq.status, 200);
    assert.equal(quoteFields(Buffer.from(rq.json.quote, 'hex')).reportData, hex(rd));
    const g = await rawRequest(agent.tappdSocket, `/prpc/Tappd.RawQuote?report_data=${hex(rd)}`,
      { method: 'GET' });
    assert.equal(g.status, 200, 'RawQuote by GET query string');
    assert.equal(quoteFields(Buffer.from(g.json.quote, 'hex')).reportData, hex(rd));
    for (const m of ['/prpc/Tappd.RawQuote', '/prpc/Tappd.TdxQuote']) {
      const short = await rawRequest(agent.tappdSocket, m, { body: JSON.stringify({
        report_data: '00'.repeat(63), hash_algorithm: 'raw' }) });
      assert.equal(short.status, 400, `${m} with 63 raw bytes`);
      assert.match(short.json?.error ?? '', /invalid content length/);
    }
  });

  it('DeriveK256Key returns the GetKey key and chain under legacy names', async () => {
    const body = JSON.stringify({ path: '/k', purpose: 'p' });
    const d = await rawRequest(agent.tappdSocket, '/prpc/Tappd.DeriveK256Key', { body });
    assert.equal(d.status, 200);
    const k = await new DstackClient(agent.socket).getKey('/k', 'p');
    assert.equal(d.json.k256_key, hex(k.key));
    assert.deepEqual(d.json.k256_signature_chain, k.signature_chain.map(hex));
  });

  it('dstack-only methods are not served on tappd.sock', async () => {
    const r = await rawRequest(agent.tappdSocket, '/prpc/Tappd.GetQuote', { body: '{}' });
    assert.equal(r.status, 400);
    assert.equal(r.json?.error, 'Service not found: GetQuote');
  });
});
