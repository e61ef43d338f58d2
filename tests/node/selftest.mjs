// Checks push-receiver.mjs against independent senders built here: payloads encrypted with
// `http_ece` (RFC 8291 aes128gcm), VAPID JWTs (RFC 8292) signed with Node's crypto, sent over
// HTTPS that trusts only the printed certificate, with the host name mapped to 127.0.0.1.
//
//   node selftest.mjs        (or: npm test --prefix tests/node)
//
// Prints one line per check and closes with "N passed, N failed"; exits 1 on any failure.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import https from 'node:https';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

import ece from 'http_ece';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const HOST = 'push.test';

// Starts the receiver and yields its stdout lines, parsed.
function startReceiver(host) {
  const child = spawn(process.execPath, [path.join(HERE, 'push-receiver.mjs'), '--host', host], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const waiting = [];
  const queued = [];
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    const value = JSON.parse(line);
    const waiter = waiting.shift();
    if (waiter) {
      waiter(value);
    } else {
      queued.push(value);
    }
  });
  const next = (ms = 5000) =>
    queued.length > 0
      ? Promise.resolve(queued.shift())
      : new Promise((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error('no line from the receiver in time')), ms);
          waiting.push((value) => {
            clearTimeout(timer);
            resolve(value);
          });
        });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return { child, next, exited };
}

function vapidKeys() {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = publicKey.export({ format: 'jwk' });
  const raw = Buffer.concat([
    Buffer.from([4]),
    Buffer.from(jwk.x, 'base64url'),
    Buffer.from(jwk.y, 'base64url'),
  ]);
  return { privateKey, k: raw.toString('base64url') };
}

function vapidHeader(keys, claims, { alg = 'ES256', corrupt = false } = {}) {
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const signingInput = `${b64({ typ: 'JWT', alg })}.${b64(claims)}`;
  const signature = crypto.sign('sha256', Buffer.from(signingInput), {
    key: keys.privateKey,
    dsaEncoding: 'ieee-p1363',
  });
  if (corrupt) {
    signature[10] ^= 0x01;
  }
  return `vapid t=${signingInput}.${signature.toString('base64url')}, k=${keys.k}`;
}

function encrypt(plaintext, p256dh, auth) {
  const sender = crypto.createECDH('prime256v1');
  sender.generateKeys();
  return ece.encrypt(Buffer.from(plaintext, 'utf8'), {
    version: 'aes128gcm',
    privateKey: sender,
    dh: p256dh,
    authSecret: auth,
  });
}

function request(ready, { path: reqPath, headers = {}, body = Buffer.alloc(0), servername = HOST }) {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: HOST,
        port: ready.port,
        method: 'POST',
        path: reqPath,
        ca: ready.cert,
        servername,
        headers: { 'content-length': String(body.length), ...headers },
        agent: false,
        lookup: (_name, options, callback) =>
          options && options.all ? callback(null, [{ address: '127.0.0.1', family: 4 }]) : callback(null, '127.0.0.1', 4),
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

let passed = 0;
let failed = 0;
async function check(name, fn) {
  try {
    await fn();
    passed++;
    process.stdout.write(`ok   ${name}\n`);
  } catch (err) {
    failed++;
    process.stdout.write(`FAIL ${name}\n${err && err.stack ? err.stack : err}\n`);
  }
}

const receiver = startReceiver(HOST);
const ready = await receiver.next(30000);
const origin = `https://${HOST}:${ready.port}`;
const keys = vapidKeys();
const now = () => Math.floor(Date.now() / 1000);
const goodClaims = () => ({ aud: origin, exp: now() + 12 * 3600, sub: 'mailto:ops@example.com' });

await check('ready line: port, PEM certificate, 65-byte p256dh, 16-byte auth', () => {
  assert.ok(Number.isInteger(ready.port) && ready.port > 0);
  assert.match(ready.cert, /^-----BEGIN CERTIFICATE-----/);
  const x509 = new crypto.X509Certificate(ready.cert);
  assert.ok(x509.checkHost(HOST), 'the certificate names the host');
  assert.equal(x509.ca, false);
  assert.equal(Buffer.from(ready.p256dh, 'base64url').length, 65);
  assert.equal(Buffer.from(ready.p256dh, 'base64url')[0], 4);
  assert.equal(Buffer.from(ready.auth, 'base64url').length, 16);
});

await check('encrypted payload with a valid VAPID header: 201, decrypted, vapid ok', async () => {
  const message = { type: 'message', id: 'abc', body: 'héllo ✓' };
  const claims = goodClaims();
  const status = await request(ready, {
    path: '/push/one?x=1',
    headers: {
      ttl: '60',
      urgency: 'high',
      'content-encoding': 'aes128gcm',
      'content-type': 'application/octet-stream',
      authorization: vapidHeader(keys, claims),
    },
    body: encrypt(JSON.stringify(message), ready.p256dh, ready.auth),
  });
  assert.equal(status, 201);
  const line = await receiver.next();
  assert.equal(line.method, 'POST');
  assert.equal(line.path, '/push/one?x=1');
  assert.equal(line.status, 201);
  assert.deepEqual(line.headers, {
    ttl: '60',
    urgency: 'high',
    contentEncoding: 'aes128gcm',
    contentType: 'application/octet-stream',
  });
  assert.deepEqual(line.vapid, { ok: true, aud: origin, exp: claims.exp, sub: claims.sub, k: keys.k });
  assert.deepEqual(line.payload, message);
  assert.equal(line.text, JSON.stringify(message));
  assert.equal(line.error, null);
});

await check('a plain-text payload: text set, payload null', async () => {
  await request(ready, {
    path: '/push/two',
    headers: { authorization: vapidHeader(keys, goodClaims()) },
    body: encrypt('not json', ready.p256dh, ready.auth),
  });
  const line = await receiver.next();
  assert.equal(line.text, 'not json');
  assert.equal(line.payload, null);
  assert.equal(line.error, null);
  assert.deepEqual(line.headers, { ttl: null, urgency: null, contentEncoding: null, contentType: null });
});

await check('/gone/ answers 410 and /missing/ 404', async () => {
  assert.equal(await request(ready, { path: '/gone/abc' }), 410);
  assert.equal((await receiver.next()).status, 410);
  assert.equal(await request(ready, { path: '/missing/abc' }), 404);
  const line = await receiver.next();
  assert.equal(line.status, 404);
  assert.equal(line.path, '/missing/abc');
  assert.equal(line.payload, null);
  assert.equal(line.text, null);
  assert.equal(line.error, null);
});

await check('a payload encrypted for another auth secret: error, no payload', async () => {
  await request(ready, {
    path: '/push/three',
    headers: { authorization: vapidHeader(keys, goodClaims()) },
    body: encrypt('{"a":1}', ready.p256dh, crypto.randomBytes(16)),
  });
  const line = await receiver.next();
  assert.equal(line.status, 201);
  assert.equal(line.vapid.ok, true);
  assert.equal(line.payload, null);
  assert.equal(line.text, null);
  assert.equal(typeof line.error, 'string');
});

const vapidCases = [
  ['no Authorization header', null, /no Authorization/],
  ['a wrong aud (another port)', () => vapidHeader(keys, { ...goodClaims(), aud: `https://${HOST}:1` }), /aud/],
  ['an aud without the port', () => vapidHeader(keys, { ...goodClaims(), aud: `https://${HOST}` }), /aud/],
  ['an expired exp', () => vapidHeader(keys, { ...goodClaims(), exp: now() - 5 }), /future/],
  ['an exp more than 24 h ahead', () => vapidHeader(keys, { ...goodClaims(), exp: now() + 24 * 3600 + 120 }), /24 hours/],
  ['a corrupted signature', () => vapidHeader(keys, goodClaims(), { corrupt: true }), /does not verify/],
  ['a signature by another key', () => vapidHeader({ ...vapidKeys(), k: keys.k }, goodClaims()), /does not verify/],
  ['alg other than ES256', () => vapidHeader(keys, goodClaims(), { alg: 'ES384' }), /ES256/],
  ['the legacy WebPush scheme', () => vapidHeader(keys, goodClaims()).replace(/^vapid/, 'WebPush'), /scheme/],
  ['no k=', () => vapidHeader(keys, goodClaims()).replace(/, k=.*$/, ''), /no k=/],
];
for (const [name, makeHeader, pattern] of vapidCases) {
  await check(`vapid rejected: ${name}`, async () => {
    const headers = makeHeader ? { authorization: makeHeader() } : {};
    assert.equal(await request(ready, { path: '/push/vapid', headers }), 201);
    const line = await receiver.next();
    assert.equal(line.vapid.ok, false);
    assert.match(line.vapid.error, pattern);
  });
}

await check('TLS to another name fails against the printed certificate', async () => {
  await assert.rejects(request(ready, { path: '/push/x', servername: 'other.test' }), /altnames|Hostname/i);
});

await check('the receiver exits when its stdin closes', async () => {
  receiver.child.stdin.end();
  const { code } = await receiver.exited;
  assert.equal(code, 0);
});

await check('the receiver exits on SIGTERM', async () => {
  const other = startReceiver('other.test');
  await other.next(30000);
  other.child.kill('SIGTERM');
  const { code } = await other.exited;
  assert.equal(code, 0);
});

if (receiver.child.exitCode === null) {
  receiver.child.kill();
}
process.stdout.write(`${passed} passed, ${failed} failed\n`);
process.exitCode = failed === 0 ? 0 : 1;
