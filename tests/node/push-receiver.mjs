// A stand-in for a Web Push service (RFC 8030) that the integration tests point the server at.
//
//   node push-receiver.mjs --host push.test
//
// It makes a self-signed TLS certificate for the host name (CN and DNS SAN), a P-256
// subscription key pair and a 16-byte auth secret, listens with HTTPS on 127.0.0.1 on an
// ephemeral port and prints ONE ready line on stdout:
//
//   {"port": N, "cert": "<PEM>", "p256dh": "<base64url, 65-byte uncompressed point>", "auth": "<base64url, 16 bytes>"}
//
// Every request is answered by its path: `/gone/...` 410, `/missing/...` 404, anything else
// 201, all with an empty body. After answering it prints one line per request:
//
//   {"method", "path", "status",
//    "headers": {"ttl", "urgency", "contentEncoding", "contentType"},   (strings, null when absent)
//    "bodyLength",
//    "vapid": {"ok", "aud", "exp", "sub", "k", "error"?},
//    "payload": <decrypted body parsed as JSON, or null>,
//    "text": <decrypted body as UTF-8, or null>,
//    "error": <why decryption failed, or null>}
//
// The body is decrypted as RFC 8291 aes128gcm with the `http_ece` package (an empty body gives
// nulls and no error). `vapid.ok` holds only when the `Authorization: vapid t=<JWT>, k=<key>`
// header (RFC 8292) carries an ES256 JWT whose signature verifies with `k`, whose `aud` is
// `https://<host>:<port>` and whose `exp` lies in the future and at most 24 hours ahead;
// otherwise `vapid.error` says what failed.
//
// It exits when its standard input closes (so keep stdin open: a parent that dies or drops
// it stops the receiver), on SIGTERM and on SIGINT.
import crypto from 'node:crypto';
import https from 'node:https';
import process from 'node:process';

import ece from 'http_ece';
import selfsigned from 'selfsigned';

const MAX_BODY = 1 << 20;
const MAX_EXP_AHEAD_SECONDS = 24 * 60 * 60;

function emit(value) {
  process.stdout.write(JSON.stringify(value) + '\n');
}

function fail(message) {
  process.stderr.write(`push-receiver: ${message}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  let host = null;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--host') {
      host = argv[++i];
    } else if (arg.startsWith('--host=')) {
      host = arg.slice('--host='.length);
    } else {
      fail(`unknown argument ${JSON.stringify(arg)} (usage: push-receiver.mjs --host <name>)`);
    }
  }
  if (!host || !/^[A-Za-z0-9.-]+$/.test(host)) {
    fail('--host <DNS name> is required');
  }
  return { host: host.toLowerCase() };
}

async function makeCertificate(host) {
  const notBefore = new Date(Date.now() - 60 * 60 * 1000);
  const notAfter = new Date(Date.now() + 7 * 24 * 60 * 60 * 1000);
  const pems = await selfsigned.generate([{ name: 'commonName', value: host }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notBeforeDate: notBefore,
    notAfterDate: notAfter,
    extensions: [
      // Not a CA: TLS clients such as rustls/webpki refuse a CA certificate as the server's own.
      { name: 'basicConstraints', cA: false, critical: true },
      { name: 'keyUsage', digitalSignature: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames: [{ type: 2, value: host }] },
    ],
  });
  return { key: pems.private, cert: pems.cert };
}

function header(req, name) {
  const value = req.headers[name];
  if (value === undefined) {
    return null;
  }
  return Array.isArray(value) ? value.join(', ') : value;
}

function decodeJsonSegment(segment, what) {
  let value;
  try {
    value = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
  } catch {
    throw new Error(`the JWT ${what} is not base64url JSON`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new Error(`the JWT ${what} is not a JSON object`);
  }
  return value;
}

// Checks the RFC 8292 `Authorization: vapid t=..., k=...` header.
function checkVapid(authorization, expectedAud) {
  const result = { ok: false, aud: null, exp: null, sub: null, k: null };
  const problems = [];
  try {
    if (authorization === null) {
      throw new Error('no Authorization header');
    }
    const match = /^\s*(\S+)\s+(.*)$/s.exec(authorization);
    if (!match || match[1].toLowerCase() !== 'vapid') {
      throw new Error(`the Authorization scheme is not "vapid": ${JSON.stringify(authorization.slice(0, 40))}`);
    }
    const params = {};
    for (const part of match[2].split(',')) {
      const eq = part.indexOf('=');
      if (eq < 0) {
        throw new Error(`malformed vapid parameter ${JSON.stringify(part.trim())}`);
      }
      const name = part.slice(0, eq).trim().toLowerCase();
      if (name in params) {
        throw new Error(`vapid parameter ${name} is repeated`);
      }
      params[name] = part.slice(eq + 1).trim();
    }
    if (!params.t) {
      throw new Error('the vapid header has no t= (JWT)');
    }
    if (!params.k) {
      throw new Error('the vapid header has no k= (public key)');
    }
    result.k = params.k;

    const segments = params.t.split('.');
    if (segments.length !== 3) {
      throw new Error('t= is not a three-part JWT');
    }
    const [headerB64, payloadB64, signatureB64] = segments;
    const jwtHeader = decodeJsonSegment(headerB64, 'header');
    const claims = decodeJsonSegment(payloadB64, 'payload');
    result.aud = claims.aud ?? null;
    result.exp = claims.exp ?? null;
    result.sub = claims.sub ?? null;

    if (jwtHeader.alg !== 'ES256') {
      problems.push(`JWT alg is ${JSON.stringify(jwtHeader.alg)}, not "ES256"`);
    }

    if (!/^[A-Za-z0-9_-]+$/.test(params.k)) {
      throw new Error('k= is not base64url');
    }
    const raw = Buffer.from(params.k, 'base64url');
    if (raw.length !== 65 || raw[0] !== 0x04) {
      throw new Error(`k= is not a 65-byte uncompressed P-256 point (${raw.length} bytes)`);
    }
    let publicKey;
    try {
      publicKey = crypto.createPublicKey({
        key: {
          kty: 'EC',
          crv: 'P-256',
          x: raw.subarray(1, 33).toString('base64url'),
          y: raw.subarray(33, 65).toString('base64url'),
        },
        format: 'jwk',
      });
    } catch (err) {
      throw new Error(`k= is not a P-256 public key: ${err.message}`);
    }
    if (!/^[A-Za-z0-9_-]*$/.test(signatureB64)) {
      throw new Error('the JWT signature is not base64url');
    }
    const signature = Buffer.from(signatureB64, 'base64url');
    if (signature.length !== 64) {
      problems.push(`the JWT signature is ${signature.length} bytes, not 64 (raw r||s)`);
    } else {
      const signed = Buffer.from(`${headerB64}.${payloadB64}`, 'ascii');
      const valid = crypto.verify('sha256', signed, { key: publicKey, dsaEncoding: 'ieee-p1363' }, signature);
      if (!valid) {
        problems.push('the JWT signature does not verify with k=');
      }
    }

    if (claims.aud !== expectedAud) {
      problems.push(`aud is ${JSON.stringify(claims.aud)}, expected ${JSON.stringify(expectedAud)}`);
    }
    const now = Math.floor(Date.now() / 1000);
    if (typeof claims.exp !== 'number' || !Number.isFinite(claims.exp)) {
      problems.push('exp is missing or not a number');
    } else if (claims.exp <= now) {
      problems.push(`exp ${claims.exp} is not in the future (now ${now})`);
    } else if (claims.exp > now + MAX_EXP_AHEAD_SECONDS) {
      problems.push(`exp ${claims.exp} is more than 24 hours ahead (now ${now})`);
    }
  } catch (err) {
    problems.push(err.message);
  }
  result.ok = problems.length === 0;
  if (!result.ok) {
    result.error = problems.join('; ');
  }
  return result;
}

function decryptBody(body, receiverKey, authSecret) {
  if (body.length === 0) {
    return { payload: null, text: null, error: null };
  }
  let plaintext;
  try {
    plaintext = ece.decrypt(body, { version: 'aes128gcm', privateKey: receiverKey, authSecret });
  } catch (err) {
    return { payload: null, text: null, error: String(err && err.message ? err.message : err) };
  }
  const text = new TextDecoder('utf-8', { fatal: false }).decode(plaintext);
  let payload = null;
  try {
    payload = JSON.parse(text);
  } catch {
    payload = null;
  }
  return { payload, text, error: null };
}

function statusFor(path) {
  if (path.startsWith('/gone/')) {
    return 410;
  }
  if (path.startsWith('/missing/')) {
    return 404;
  }
  return 201;
}

async function main() {
  const { host } = parseArgs(process.argv.slice(2));
  const { key, cert } = await makeCertificate(host);

  const receiverKey = crypto.createECDH('prime256v1');
  receiverKey.generateKeys();
  const authSecret = crypto.randomBytes(16);

  let expectedAud = null;
  const server = https.createServer({ key, cert }, (req, res) => {
    const chunks = [];
    let size = 0;
    let tooLarge = false;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY) {
        tooLarge = true;
      } else {
        chunks.push(chunk);
      }
    });
    req.on('error', (err) => {
      process.stderr.write(`push-receiver: request error: ${err.message}\n`);
    });
    req.on('end', () => {
      const path = req.url ?? '';
      const status = tooLarge ? 413 : statusFor(path);
      res.writeHead(status, { 'content-length': '0' });
      res.end();

      const body = Buffer.concat(chunks);
      const decrypted = tooLarge
        ? { payload: null, text: null, error: `body larger than ${MAX_BODY} bytes` }
        : decryptBody(body, receiverKey, authSecret);
      emit({
        method: req.method,
        path,
        status,
        headers: {
          ttl: header(req, 'ttl'),
          urgency: header(req, 'urgency'),
          contentEncoding: header(req, 'content-encoding'),
          contentType: header(req, 'content-type'),
        },
        bodyLength: size,
        vapid: checkVapid(header(req, 'authorization'), expectedAud),
        ...decrypted,
      });
    });
  });
  server.on('tlsClientError', (err) => {
    process.stderr.write(`push-receiver: TLS client error: ${err.message}\n`);
  });

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  expectedAud = `https://${host}:${port}`;

  emit({
    port,
    cert,
    p256dh: receiverKey.getPublicKey().toString('base64url'),
    auth: authSecret.toString('base64url'),
  });
}

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();

main().catch((err) => fail(err && err.stack ? err.stack : String(err)));
