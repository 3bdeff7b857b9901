// SPDX-License-Identifier: Apache-2.0
// Test harness for the SDK compatibility suite: starts `dstack-guest-agent --simulator` on
// temporary Unix sockets and a free loopback TCP port, waits until every listener accepts a
// connection, and stops it again. Also a raw HTTP helper for wire-level checks that the SDK
// cannot express (server-side rejections, GET query decoding, error bodies).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const START_TIMEOUT_MS = 20000;
const POLL_MS = 50;

export function binDir() {
  return path.resolve(process.env.DS_BIN || 'build/bin');
}

// A TCP port on 127.0.0.1 that nothing listens on right now.
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function canConnect(opts) {
  return new Promise((resolve) => {
    const c = net.createConnection(opts);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Start the simulator agent. Returns { dir, socket, tappdSocket, port, httpUrl, stop() }.
export async function startAgent() {
  const bin = path.join(binDir(), 'dstack-guest-agent');
  if (!fs.existsSync(bin)) {
    throw new Error(`${bin} does not exist (build the guest agent first)`);
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ds-sdk-'));
  const socket = path.join(dir, 'dstack.sock');
  const tappdSocket = path.join(dir, 'tappd.sock');
  const port = await freePort();
  const args = ['--simulator', '--socket', socket, '--tappd-socket', tappdSocket, '--http',
    `127.0.0.1:${port}`];
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: dir });
  let output = '';
  child.stdout.on('data', (d) => { output += d; });
  child.stderr.on('data', (d) => { output += d; });
  let exited = null;
  child.on('exit', (code, sig) => { exited = { code, sig }; });
  child.on('error', (err) => { exited = { error: err.message }; });

  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    if (exited) {
      throw new Error(`dstack-guest-agent exited early (${JSON.stringify(exited)}):\n${output}`);
    }
    const ok = fs.existsSync(socket) && fs.existsSync(tappdSocket) &&
      (await canConnect({ path: socket })) && (await canConnect({ path: tappdSocket })) &&
      (await canConnect({ host: '127.0.0.1', port }));
    if (ok) {
      break;
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`dstack-guest-agent did not come up in ${START_TIMEOUT_MS} ms:\n${output}`);
    }
    await sleep(POLL_MS);
  }

  const stop = async () => {
    if (!exited) {
      const done = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await done;
      clearTimeout(t);
    }
    fs.rmSync(dir, { recursive: true, force: true });
    return exited;
  };
  return { dir, socket, tappdSocket, port, httpUrl: `http://127.0.0.1:${port}`, stop,
    log: () => output };
}

// Raw HTTP request to an endpoint (Unix socket path or http:// URL). Resolves to
// { status, headers, text, json } (json is undefined when the body is not JSON).
export function rawRequest(endpoint, reqPath, { method = 'POST', body, contentType =
  'application/json' } = {}) {
  return new Promise((resolve, reject) => {
    const headers = {};
    if (body !== undefined) {
      headers['Content-Type'] = contentType;
      headers['Content-Length'] = Buffer.byteLength(body);
    }
    const opts = { method, path: reqPath, headers };
    if (endpoint.startsWith('http://')) {
      const u = new URL(endpoint);
      opts.host = u.hostname;
      opts.port = u.port;
    } else {
      opts.socketPath = endpoint;
      opts.host = 'localhost';
    }
    const req = http.request(opts, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode, headers: res.headers, text, json });
      });
    });
    req.setTimeout(10000, () => req.destroy(new Error('raw request timed out')));
    req.on('error', reject);
    if (body !== undefined) {
      req.write(body);
    }
    req.end();
  });
}
