// SPDX-License-Identifier: Apache-2.0
// The official JS SDK (@phala/dstack-sdk 0.5.8, DstackClient) against our guest agent in
// simulator mode, once over the Unix socket and once over HTTP (DSTACK_SIMULATOR_ENDPOINT).
// Every SDK method is called and its answer checked for real properties: signature chains
// recover to the app and KMS keys, quotes carry the padded report data and replay to their
// RTMRs, RA-TLS certificates bind their own key, Sign/Verify round-trip, EmitEvent extends
// RTMR3 as replay predicts. Spec: /work/shared/spec/guest-agent-api.md §3-§5.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { DstackClient } from '@phala/dstack-sdk';
import { secp256k1 } from '@noble/curves/secp256k1';
import { ed25519 } from '@noble/curves/ed25519';

import { rawRequest, startAgent } from './lib/agent.mjs';
import { checkChain, checkTlsKey, derivedPublicKey, hex, isHex } from './lib/checks.mjs';
import { pad64, parseAttestation, quoteFields, replay, runtimeEventDigest, sha256 } from
  './lib/tdx.mjs';

const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

async function rejects(promise, re) {
  await assert.rejects(promise, (err) => {
    assert.match(String(err.message), re);
    return true;
  });
}

for (const transport of ['unix', 'http']) {
  describe(`DstackClient over ${transport}`, () => {
    let agent;
    let client;
    let endpoint;
    let info;
    let appPub;
    let kmsPub;

    before(async () => {
      agent = await startAgent();
      if (transport === 'unix') {
        endpoint = agent.socket;
        client = new DstackClient(endpoint);
      } else {
        endpoint = agent.httpUrl;
        process.env.DSTACK_SIMULATOR_ENDPOINT = endpoint;
        client = new DstackClient();
        delete process.env.DSTACK_SIMULATOR_ENDPOINT;
      }
    });
    after(async () => {
      if (agent) {
        await agent.stop();
      }
    });

    it('isReachable() is true, and false for a dead endpoint', async () => {
      assert.equal(await client.isReachable(), true);
      // A regular file: it exists (the constructor checks that) but nothing listens on it.
      const deadPath = `${agent.dir}/not-a-socket`;
      fs.writeFileSync(deadPath, '');
      const dead = new DstackClient(transport === 'unix' ? deadPath : 'http://127.0.0.1:1');
      assert.equal(await dead.isReachable(), false);
    });

    it('version() returns version and rev strings', async () => {
      const v = await client.version();
      assert.equal(typeof v.version, 'string');
      assert.match(v.version, /^\d+\.\d+\.\d+/);
      assert.equal(typeof v.rev, 'string');
      assert.ok(v.rev.length > 0);
    });

    it('info() fields are present with the right types and agree with each other', async () => {
      info = await client.info();
      for (const k of ['app_id', 'instance_id', 'device_id', 'compose_hash', 'mr_aggregated',
        'os_image_hash']) {
        assert.ok(isHex(info[k]) && info[k].length > 0, `${k} is non-empty lowercase hex`);
      }
      assert.ok(isHex(info.app_id, 20), 'app_id is 20 bytes');
      assert.ok(isHex(info.compose_hash, 32), 'compose_hash is 32 bytes');
      assert.ok(isHex(info.mr_aggregated, 32), 'mr_aggregated is 32 bytes');
      assert.equal(info.device_id, EMPTY_SHA256, 'device_id = SHA-256("") on TDX (spec §4.11)');
      for (const k of ['app_cert', 'app_name', 'key_provider_info', 'vm_config', 'cloud_vendor',
        'cloud_product']) {
        assert.equal(typeof info[k], 'string', `${k} is a string`);
      }
      assert.ok(info.app_name.length > 0, 'app_name non-empty');
      assert.ok(info.app_cert.includes('-----BEGIN CERTIFICATE-----'), 'app_cert is a PEM chain');
      assert.doesNotThrow(() => JSON.parse(info.key_provider_info), 'key_provider_info is JSON');
      const tcb = info.tcb_info;
      assert.equal(typeof tcb, 'object');
      for (const k of ['mrtd', 'rtmr0', 'rtmr1', 'rtmr2', 'rtmr3']) {
        assert.ok(isHex(tcb[k], 48), `tcb_info.${k} is 96 hex characters`);
      }
      for (const k of ['mr_aggregated', 'os_image_hash', 'compose_hash', 'device_id']) {
        assert.equal(tcb[k], info[k], `tcb_info.${k} equals info.${k}`);
      }
      assert.equal(typeof tcb.app_compose, 'string');
      assert.doesNotThrow(() => JSON.parse(tcb.app_compose), 'app_compose is JSON text');
      assert.ok(Array.isArray(tcb.event_log) && tcb.event_log.length > 0);
      for (const e of tcb.event_log) {
        assert.equal(typeof e.imr, 'number');
        assert.equal(typeof e.event_type, 'number');
        assert.ok(isHex(e.digest));
        assert.equal(typeof e.event, 'string');
        assert.ok(isHex(e.event_payload));
      }
      for (let i = 0; i < 4; i++) {
        assert.equal(replay(tcb.event_log, i), tcb[`rtmr${i}`], `tcb_info event log replays rtmr${i}`);
      }
      const first = (name) => tcb.event_log.find((e) => e.imr === 3 && e.event === name);
      assert.equal(first('app-id')?.event_payload, info.app_id, 'app_id = payload of app-id');
      assert.equal(first('instance-id')?.event_payload, info.instance_id);
      assert.equal(first('compose-hash')?.event_payload, info.compose_hash);
      assert.equal(Buffer.from(first('key-provider')?.event_payload ?? '', 'hex').toString(),
        info.key_provider_info, 'key_provider_info = payload of key-provider');
    });

    it('getKey() signature chain recovers to the app key and the KMS key', async () => {
      const seen = new Set();
      for (const [path, purpose] of [['/', 'test'], ['/test/path', 'test-purpose'], ['', '']]) {
        const r = await client.getKey(path, purpose);
        assert.equal(r.key.length, 32);
        assert.equal(r.signature_chain.length, 2);
        const c = checkChain(r.signature_chain, purpose, derivedPublicKey(r.key, 'secp256k1'),
          info.app_id);
        appPub ??= c.appPub;
        kmsPub ??= c.kmsPub;
        assert.equal(c.appPub, appPub, 'one app root key for every path');
        assert.equal(c.kmsPub, kmsPub, 'one KMS key for every path');
        seen.add(hex(r.key));
        const again = await client.getKey(path, purpose);
        assert.deepEqual(again.key, r.key, 'GetKey is deterministic');
      }
      assert.equal(seen.size, 3, 'different paths give different keys');
      assert.notEqual(appPub, kmsPub);
      const sameKeyOtherPurpose = await client.getKey('/', 'other');
      const r0 = await client.getKey('/', 'test');
      assert.deepEqual(sameKeyOtherPurpose.key, r0.key, 'purpose does not change the key');
      assert.notDeepEqual(sameKeyOtherPurpose.signature_chain[0], r0.signature_chain[0]);
    });

    it('getKey() algorithms: ed25519 chain, k256 alias, unsupported ones rejected', async () => {
      const k1 = await client.getKey('/secp', 'p', 'secp256k1');
      const alias = await client.getKey('/secp', 'p', 'k256');
      assert.deepEqual(alias.key, k1.key, 'k256 is an alias of secp256k1');
      const ed = await client.getKey('/secp', 'p', 'ed25519');
      assert.equal(ed.key.length, 32);
      assert.deepEqual(ed.key, k1.key, 'the algorithm does not separate keys (spec §4.2)');
      const c = checkChain(ed.signature_chain, 'p', derivedPublicKey(ed.key, 'ed25519'), info.app_id);
      assert.equal(c.appPub, appPub);
      assert.equal(c.kmsPub, kmsPub);
      // The SDK does not check for {"error"}: a rejected algorithm fails when it reads `key`.
      await rejects(client.getKey('/x', 'p', 'rsa'), /./);
      await rejects(client.getKey('/x', 'p', 'secp256k1_prehashed'), /./);
      const raw = await rawRequest(endpoint, '/GetKey', { body: JSON.stringify({ path: '/x',
        algorithm: 'rsa' }) });
      assert.equal(raw.status, 400);
      assert.match(raw.json?.error ?? '', /Unsupported algorithm/);
    });

    it('getQuote() pads report data, and the event log replays to the quote RTMRs', async () => {
      for (const rd of ['some data or anything...', Buffer.alloc(0), crypto.randomBytes(64)]) {
        const q = await client.getQuote(rd);
        const want = pad64(typeof rd === 'string' ? Buffer.from(rd) : rd).toString('hex');
        assert.ok(isHex(q.quote) && q.quote.length > 2 * 632);
        const f = quoteFields(Buffer.from(q.quote, 'hex'));
        assert.equal(f.version, 4, 'TDX quote v4');
        assert.equal(f.teeType, 0x81, 'TEE type TDX');
        assert.equal(f.reportData, want, 'quote report_data is the zero-padded request');
        assert.equal(q.report_data, want, 'response report_data is the padded request');
        assert.equal(typeof q.vm_config, 'string');
        const log = JSON.parse(q.event_log);
        assert.ok(Array.isArray(log) && log.length > 0);
        for (const e of log) {
          for (const k of ['imr', 'event_type', 'digest', 'event', 'event_payload']) {
            assert.ok(k in e, `event log entry has ${k}`);
          }
          if (e.imr === 3 && e.version === undefined) {
            assert.equal(e.event_type, 0x08000001);
            assert.equal(e.digest, runtimeEventDigest(e.event, Buffer.from(e.event_payload,
              'hex')), `runtime event ${e.event} digest is the V1 formula`);
          }
        }
        const replayed = q.replayRtmrs();
        assert.equal(replayed.length, 4);
        assert.deepEqual(replayed, f.rtmrs, 'replayRtmrs() equals the quote RTMR0-3');
        // mr_aggregated (spec §4.11) from this quote's registers.
        const parts = [f.mrtd, ...f.rtmrs];
        if (/[^0]/.test(f.mrConfigId + f.mrOwner + f.mrOwnerConfig)) {
          parts.push(f.mrConfigId, f.mrOwner, f.mrOwnerConfig);
        }
        assert.equal(sha256(Buffer.from(parts.join(''), 'hex')).toString('hex'),
          info.mr_aggregated, 'info.mr_aggregated = SHA-256 of the quote registers');
        assert.equal(f.mrtd, info.tcb_info.mrtd);
      }
    });

    it('getQuote()/attest() reject report data over 64 bytes (client and server)', async () => {
      await rejects(client.getQuote(Buffer.alloc(65)), /too large/);
      await rejects(client.attest(Buffer.alloc(65)), /too large/);
      for (const m of ['/GetQuote', '/Attest']) {
        const r = await rawRequest(endpoint, m, { body: JSON.stringify({
          report_data: '00'.repeat(65) }) });
        assert.equal(r.status, 400, `${m} with 65 bytes is HTTP 400`);
        assert.match(r.json?.error ?? '', /Report data is too long/);
      }
    });

    it('attest() returns an attestation bound to the padded report data', async () => {
      const a = await client.attest('test');
      assert.ok(isHex(a.attestation) && a.attestation.length > 0);
      const att = parseAttestation(Buffer.from(a.attestation, 'hex'));
      const want = pad64(Buffer.from('test')).toString('hex');
      assert.equal(hex(att.reportData), want, 'attestation report_data field');
      const f = quoteFields(att.quote);
      assert.equal(f.reportData, want, 'embedded quote report_data');
      assert.equal(f.mrtd, info.tcb_info.mrtd);
      for (let i = 0; i < 3; i++) {
        assert.equal(replay(att.eventLog, i), f.rtmrs[i], `attestation log replays rtmr${i}`);
      }
      const rt = att.runtimeEvents.map((e) => ({ imr: 3,
        digest: runtimeEventDigest(e.event, e.payload) }));
      assert.equal(replay(rt, 3), f.rtmrs[3], 'runtime events replay to rtmr3');
    });

    it('getTlsKey() default: fresh P-256 key, server-auth certificate, no RA-TLS', async () => {
      const a = await client.getTlsKey();
      checkTlsKey(a, { serverAuth: true });
      const b = await client.getTlsKey();
      assert.notEqual(a.key, b.key, 'every call makes a new key');
      assert.notEqual(a.asUint8Array(32).length, a.asUint8Array().length);
    });

    it('getTlsKey() RA-TLS certificate binds SHA-512("ratls-cert:" || SPKI)', async () => {
      const opts = { subject: 'test-subject', altNames: ['localhost', '127.0.0.1'],
        usageRaTls: true, usageServerAuth: true, usageClientAuth: true };
      const r = await client.getTlsKey(opts);
      const { attestation } = checkTlsKey(r, { subject: 'test-subject', altNames: opts.altNames,
        raTls: true, serverAuth: true, clientAuth: true });
      assert.equal(quoteFields(attestation.quote).mrtd, info.tcb_info.mrtd);
      const c = await client.getTlsKey({ usageServerAuth: false, usageClientAuth: true });
      checkTlsKey(c, { clientAuth: true });
    });

    it('getTlsKey() validity and app-info options', async () => {
      const notBefore = 1700000000;
      const notAfter = 1900000000;
      const r = await client.getTlsKey({ subject: 's', notBefore, notAfter, withAppInfo: true });
      checkTlsKey(r, { subject: 's', serverAuth: true, notBefore, notAfter, appInfo: true });
      const bad = await rawRequest(endpoint, '/GetTlsKey', { body: JSON.stringify({
        not_before: notAfter, not_after: notBefore }) });
      assert.equal(bad.status, 400);
      assert.match(bad.json?.error ?? '', /not_before must be earlier than not_after/);
    });

    it('sign()/verify() round-trip for each algorithm; wrong signatures fail', async () => {
      const data = Buffer.from('hello dstack');
      const digest = sha256(data);
      const vms = await client.getKey('vms', 'signing');
      const vmsEd = await client.getKey('vms', 'signing', 'ed25519');
      for (const alg of ['ed25519', 'secp256k1', 'secp256k1_prehashed']) {
        const input = alg === 'secp256k1_prehashed' ? digest : data;
        const s = await client.sign(alg, input);
        assert.equal(s.signature.length, 64, `${alg} signature is 64 bytes`);
        assert.equal(s.signature_chain.length, 3, 'chain = [signature, sig0, kms]');
        assert.deepEqual(s.signature_chain[0], s.signature);
        if (alg === 'ed25519') {
          assert.equal(hex(s.public_key), hex(derivedPublicKey(vmsEd.key, 'ed25519')),
            'Sign uses the key of GetKey("vms","signing")');
          assert.ok(ed25519.verify(s.signature, input, s.public_key), 'Ed25519 signature verifies');
        } else {
          assert.equal(hex(s.public_key), hex(derivedPublicKey(vms.key, 'secp256k1')));
          assert.ok(secp256k1.verify(s.signature, digest, s.public_key),
            'ECDSA over SHA-256(data) verifies');
        }
        const c = checkChain(s.signature_chain.slice(1), 'signing', s.public_key, info.app_id);
        assert.equal(c.appPub, appPub);
        assert.equal(c.kmsPub, kmsPub);
        const ok = await client.verify(alg, input, s.signature, s.public_key);
        assert.strictEqual(ok.valid, true, `${alg}: own signature verifies`);
        const wrongData = Buffer.from(input);
        wrongData[0] ^= 1;
        const v1 = await client.verify(alg, wrongData, s.signature, s.public_key);
        assert.strictEqual(v1.valid, false, `${alg}: other data does not verify`);
        const wrongSig = Buffer.from(s.signature);
        wrongSig[5] ^= 0x40;
        const v2 = await client.verify(alg, input, wrongSig, s.public_key);
        assert.strictEqual(v2.valid, false, `${alg}: altered signature does not verify`);
      }
      await rejects(client.sign('secp256k1_prehashed', Buffer.alloc(31)), /32-byte digest/);
      const r = await rawRequest(endpoint, '/Sign', { body: JSON.stringify({
        algorithm: 'secp256k1_prehashed', data: '00'.repeat(31) }) });
      assert.equal(r.status, 400);
      assert.match(r.json?.error ?? '',
        /Pre-hashed signing requires a 32-byte digest, but received 31 bytes/);
      await rejects(client.sign('rsa', data), /./);
      const bad = await rawRequest(endpoint, '/Verify', { body: JSON.stringify({
        algorithm: 'ed25519', data: '00', signature: '00'.repeat(64), public_key: '00'.repeat(31) }) });
      assert.equal(bad.status, 400, 'a malformed Ed25519 key is an error, not valid:false');
    });

    it('emitEvent() extends RTMR3 as replay predicts', async () => {
      const before = await client.getQuote('e');
      const r3 = quoteFields(Buffer.from(before.quote, 'hex')).rtmrs[3];
      const name = `sdk-test-${transport}`;
      const payload = Buffer.from('payload-' + crypto.randomBytes(4).toString('hex'));
      await client.emitEvent(name, payload);
      const afterQ = await client.getQuote('e');
      const f = quoteFields(Buffer.from(afterQ.quote, 'hex'));
      const digest = runtimeEventDigest(name, payload);
      const sha = crypto.createHash('sha384');
      sha.update(Buffer.from(r3 + digest, 'hex'));
      assert.equal(f.rtmrs[3], sha.digest('hex'), 'RTMR3 := SHA-384(RTMR3 || digest)');
      const log = JSON.parse(afterQ.event_log);
      const ev = log.filter((e) => e.imr === 3).at(-1);
      assert.equal(ev.event, name);
      assert.equal(ev.event_payload, hex(payload));
      assert.equal(ev.digest, digest);
      assert.deepEqual(afterQ.replayRtmrs(), f.rtmrs);
      assert.deepEqual(f.rtmrs.slice(0, 3),
        quoteFields(Buffer.from(before.quote, 'hex')).rtmrs.slice(0, 3), 'RTMR0-2 unchanged');
      await rejects(client.emitEvent('', payload), /empty/);
    });

    it('deprecated DstackClient.tdxQuote/deriveKey behave as in the SDK', async () => {
      const q = await client.tdxQuote('abc', 'raw');
      assert.equal(quoteFields(Buffer.from(q.quote, 'hex')).reportData,
        pad64(Buffer.from('abc')).toString('hex'));
      await rejects(client.tdxQuote('abc', 'sha256'), /only supports raw/);
      await rejects(client.deriveKey('/', 'x'), /deprecated/);
    });

    it('wire: GET query decoding, empty body defaults, unknown method', async () => {
      const viaSdk = await client.getKey('my/key/path', 'signing', 'ed25519');
      const g = await rawRequest(endpoint,
        '/GetKey?path=my%2Fkey%2Fpath&purpose=signing&algorithm=ed25519', { method: 'GET' });
      assert.equal(g.status, 200);
      assert.equal(g.json.key, hex(viaSdk.key));
      assert.deepEqual(g.json.signature_chain, viaSdk.signature_chain.map(hex));
      const e = await rawRequest(endpoint, '/GetKey', { body: '' });
      assert.equal(e.status, 200);
      assert.equal(e.json.key, hex((await client.getKey()).key), 'empty body = default request');
      const u = await rawRequest(endpoint, '/NoSuchMethod', { body: '{}' });
      assert.equal(u.status, 400);
      assert.equal(u.json?.error, 'Service not found: NoSuchMethod');
      const gi = await rawRequest(endpoint, '/Info', { method: 'GET' });
      assert.equal(gi.status, 200);
      assert.equal(gi.json.app_id, info.app_id);
    });
  });
}
