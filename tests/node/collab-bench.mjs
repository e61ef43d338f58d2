// Load benchmark of the collaborative-document socket with real y-websocket 2.x clients. Run by
// hand against a running server (never by the tests):
//
//   node tests/node/collab-bench.mjs --base ws://127.0.0.1:3511 --tokens tokens.json \
//        --docs 50 --editors 10 --rate 5 --seconds 60
//
// tokens.json: {"channels": ["<channelId>", ...], "tokens": ["<accessToken>", ...]}. Doc d is
// channels[d] (so there must be at least --docs channels; --docs defaults to all of them) and
// its editor i uses tokens[(d * editors + i) % tokens.length].
//
// Every editor is a WebsocketProvider on its own Y.Doc connected to <base>/collab/<channelId>
// ?token=<token> (no reconnection: a close counts as an error), with an awareness state like a
// real client's. Once every editor has synced, each appends `rate` short inserts a second to
// the doc's Y.Text "content", each carrying a marker "[<run>:<editor>:<seq>@<send time>]";
// every editor parses this run's markers out of the remote inserts it observes (so content a
// server kept from an earlier run does not count) and records now - send time. After --seconds the editors stop typing, up to --drain-ms is allowed for the last
// updates to arrive, and ONE JSON line goes to stdout:
//
//   {"docs","editors","updatesSent","observations","p50Ms","p95Ms","p99Ms","maxMs","errors",
//    "expectedObservations","updatesPlanned","meanMs","seconds","rate","workers","connectMs","eventLoopLagMaxMs",
//    "errorSamples"}
//
// expectedObservations is updatesSent * (editors - 1): fewer observations mean lost updates.
// updatesPlanned is docs * editors * rate * seconds: fewer updatesSent mean the clients could
// not keep the rate (typing stops on a closed socket, and timers slip on a busy event loop).
// eventLoopLagMaxMs is the clients' own worst event-loop delay: when it is large, the load
// generator, not the server, is the bottleneck (add --workers, which splits the docs over
// worker threads; all clocks are the process's one high-resolution clock).
//
// Other options: --path /collab, --connect-timeout-ms 30000, --drain-ms 5000,
// --connect-concurrency 20 (handshakes in flight per worker), --workers 1.
// Exits 0 with the summary once the run happened (errors are counted, not fatal); 1 when the
// editors could not all connect and sync (a JSON line with "error" says why); 2 on bad usage.
import fs from 'node:fs';
import process from 'node:process';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';

import WebSocket from 'ws';
import { WebsocketProvider } from 'y-websocket';
import * as Y from 'yjs';

// stdout carries only the summary.
console.log = (...args) => console.error(...args);
console.info = (...args) => console.error(...args);
// y-websocket adds a process 'exit' listener per provider.
process.setMaxListeners(0);

/** One clock for every thread of the process, in ms. */
const now = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const MARKER = /\[([0-9a-z]+):(\d+):(\d+)@(\d+(?:\.\d+)?)\]/g;
const MAX_ERROR_SAMPLES = 10;

function usage(message) {
  process.stderr.write(`collab-bench: ${message}\n`);
  process.stderr.write(
    'usage: node collab-bench.mjs --base ws://HOST:PORT --tokens tokens.json [--docs N] [--editors N] [--rate N] [--seconds N]\n' +
      '       [--path /collab] [--workers N] [--connect-timeout-ms N] [--drain-ms N] [--connect-concurrency N]\n',
  );
  process.exit(2);
}

function parseArgs(argv) {
  const opts = {
    base: null,
    tokens: null,
    docs: null,
    editors: 10,
    rate: 5,
    seconds: 60,
    path: '/collab',
    workers: 1,
    connectTimeoutMs: 30000,
    drainMs: 5000,
    connectConcurrency: 20,
  };
  const numeric = {
    '--docs': 'docs',
    '--editors': 'editors',
    '--rate': 'rate',
    '--seconds': 'seconds',
    '--workers': 'workers',
    '--connect-timeout-ms': 'connectTimeoutMs',
    '--drain-ms': 'drainMs',
    '--connect-concurrency': 'connectConcurrency',
  };
  for (let i = 0; i < argv.length; i += 2) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (value === undefined) usage(`${flag} needs a value`);
    if (flag === '--base') opts.base = value.replace(/\/+$/, '');
    else if (flag === '--tokens') opts.tokens = value;
    else if (flag === '--path') opts.path = value.startsWith('/') ? value : `/${value}`;
    else if (Object.hasOwn(numeric, flag)) {
      const n = Number(value);
      if (!Number.isFinite(n) || n < 0) usage(`${flag} must be a non-negative number`);
      opts[numeric[flag]] = n;
    } else usage(`unknown option ${flag}`);
  }
  if (!opts.base || !/^wss?:\/\//.test(opts.base)) usage('--base must be a ws:// or wss:// URL');
  if (!opts.tokens) usage('--tokens is required');
  for (const k of ['editors', 'workers', 'connectConcurrency']) {
    if (!Number.isInteger(opts[k]) || opts[k] < 1) usage(`--${k} must be a positive integer`);
  }
  if (!(opts.rate > 0)) usage('--rate must be positive');
  return opts;
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return round(sorted[rank]);
}

const round = (x) => (x === null ? null : Math.round(x * 100) / 100);

// ------------------------------------------------------------------------------------------
// A worker: the editors of some docs.

async function runEditors({ opts, docs, runId }) {
  const errors = { count: 0, samples: [] };
  const error = (message) => {
    errors.count += 1;
    if (errors.samples.length < MAX_ERROR_SAMPLES) errors.samples.push(message);
  };
  const latencies = [];
  let updatesSent = 0;
  let phase = 'connecting';
  const editors = [];
  const lag = monitorEventLoopDelay({ resolution: 10 });
  lag.enable();

  const url = `${opts.base}${opts.path}`;
  for (const doc of docs) {
    doc.editors.forEach((token, i) => {
      editors.push({ channel: doc.channel, token, label: `doc ${doc.index} editor ${i}` });
    });
  }

  const connectOne = (e) =>
    new Promise((resolve) => {
      const ydoc = new Y.Doc();
      const provider = new WebsocketProvider(url, e.channel, ydoc, {
        WebSocketPolyfill: WebSocket,
        params: { token: e.token },
        connect: false,
        disableBc: true,
        resyncInterval: -1,
      });
      e.doc = ydoc;
      e.provider = provider;
      e.text = ydoc.getText('content');
      e.seq = 0;
      let settled = false;
      const settle = (ok, why) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve({ ok, why });
      };
      const timer = setTimeout(() => settle(false, `${e.label}: not synced within ${opts.connectTimeoutMs} ms`), opts.connectTimeoutMs);
      provider.on('sync', (synced) => {
        if (synced) settle(true);
      });
      provider.on('connection-error', (ev) => {
        e.lastError = ev && ev.message ? String(ev.message) : 'connection error';
      });
      provider.on('connection-close', (ev) => {
        provider.shouldConnect = false;
        const code = ev && typeof ev.code === 'number' ? ev.code : null;
        const why = `${e.label}: socket closed (code ${code}${ev && ev.reason ? `, ${ev.reason}` : ''})${e.lastError ? `: ${e.lastError}` : ''}`;
        if (!settled) settle(false, why);
        else if (phase !== 'done') error(why);
      });
      e.text.observe((event) => {
        if (event.transaction.local) return;
        const at = now();
        for (const op of event.delta) {
          if (typeof op.insert !== 'string') continue;
          // Markers of earlier runs (a server that keeps documents) are not this run's.
          for (const m of op.insert.matchAll(MARKER)) if (m[1] === runId) latencies.push(at - Number(m[4]));
        }
      });
      provider.awareness.setLocalStateField('user', { name: e.label });
      provider.connect();
    });

  // Connect with at most connectConcurrency handshakes in flight.
  const connectStarted = now();
  const failures = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(opts.connectConcurrency, editors.length) }, async () => {
      while (next < editors.length) {
        const e = editors[next++];
        const r = await connectOne(e);
        if (!r.ok) failures.push(r.why);
      }
    }),
  );
  const connectMs = now() - connectStarted;
  parentPort.postMessage({ type: 'connected', failures: failures.slice(0, MAX_ERROR_SAMPLES), failed: failures.length, connectMs });
  const go = await new Promise((resolve) => parentPort.once('message', resolve));
  if (!go.run) {
    for (const e of editors) e.provider.destroy();
    return null;
  }

  // Type: each editor `rate` times a second, starting at a random point of its first period.
  phase = 'running';
  lag.reset();
  const period = 1000 / opts.rate;
  const stopAt = go.startAt + opts.seconds * 1000;
  const timers = [];
  const tick = (e, idx) => {
    if (now() >= stopAt) return;
    if (!e.provider.wsconnected) return;
    e.seq += 1;
    const t = now();
    try {
      e.text.insert(e.text.length, `[${runId}:${idx}:${e.seq}@${t.toFixed(2)}] `);
      updatesSent += 1;
    } catch (err) {
      error(`${e.label}: insert failed: ${err && err.message ? err.message : err}`);
    }
  };
  await sleep(Math.max(0, go.startAt - now()));
  editors.forEach((e, idx) => {
    const start = setTimeout(() => {
      tick(e, idx);
      timers.push(setInterval(() => tick(e, idx), period));
    }, Math.random() * period);
    timers.push(start);
  });
  await sleep(Math.max(0, stopAt - now()));
  for (const t of timers) {
    clearTimeout(t);
    clearInterval(t);
  }
  const lagMaxMs = lag.max / 1e6;
  lag.disable();

  parentPort.postMessage({ type: 'sent', updatesSent });
  // Keep observing while the main thread waits out the drain, then report.
  await new Promise((resolve) => parentPort.once('message', resolve));
  phase = 'done';
  for (const e of editors) {
    try {
      e.provider.destroy();
      e.doc.destroy();
    } catch {
      // shutting down anyway
    }
  }
  const buf = Float64Array.from(latencies);
  return { updatesSent, latencies: buf, errors, connectMs, lagMaxMs, observations: latencies.length };
}

if (!isMainThread) {
  // A worker: connects its editors, types on the main thread's word, then reports its results.
  runEditors(workerData)
    .then((result) => {
      if (result) parentPort.postMessage({ type: 'result', ...result }, [result.latencies.buffer]);
      process.exit(0);
    })
    .catch((e) => {
      parentPort.postMessage({ type: 'fatal', error: String(e && e.stack ? e.stack : e) });
      process.exit(1);
    });
}

// ------------------------------------------------------------------------------------------
// The main thread: arguments, workers, summary.

function fail(message, extra = {}) {
  process.stdout.write(`${JSON.stringify({ error: message, ...extra })}\n`);
  process.exit(1);
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  let file;
  try {
    file = JSON.parse(fs.readFileSync(opts.tokens, 'utf8'));
  } catch (e) {
    fail(`cannot read ${opts.tokens}: ${e.message}`);
  }
  const channels = Array.isArray(file.channels) ? file.channels : [];
  const tokens = Array.isArray(file.tokens) ? file.tokens : [];
  if (channels.length === 0 || !channels.every((c) => typeof c === 'string')) fail('tokens file: "channels" must be a non-empty array of strings');
  if (tokens.length === 0 || !tokens.every((t) => typeof t === 'string')) fail('tokens file: "tokens" must be a non-empty array of strings');
  const docCount = opts.docs ?? channels.length;
  if (!Number.isInteger(docCount) || docCount < 1) usage('--docs must be a positive integer');
  if (docCount > channels.length) fail(`--docs ${docCount} needs as many channels; the tokens file has ${channels.length}`);

  const docs = Array.from({ length: docCount }, (_, d) => ({
    index: d,
    channel: channels[d],
    editors: Array.from({ length: opts.editors }, (_, i) => tokens[(d * opts.editors + i) % tokens.length]),
  }));
  const runId = Math.floor(Math.random() * 2 ** 48).toString(36);
  const workerCount = Math.min(opts.workers, docCount);
  const shares = Array.from({ length: workerCount }, () => []);
  docs.forEach((doc, d) => shares[d % workerCount].push(doc));

  const workers = shares.map((share) => new Worker(new URL(import.meta.url), { workerData: { opts, docs: share, runId } }));
  const inbox = workers.map(() => []);
  const waiters = workers.map(() => []);
  const deliver = (i, msg) => {
    const w = waiters[i].shift();
    if (w) w(msg);
    else inbox[i].push(msg);
  };
  const receive = (i, timeoutMs) =>
    new Promise((resolve, reject) => {
      if (inbox[i].length > 0) {
        resolve(inbox[i].shift());
        return;
      }
      const timer = setTimeout(() => reject(new Error(`worker ${i} did not answer within ${timeoutMs} ms`)), timeoutMs);
      waiters[i].push((msg) => {
        clearTimeout(timer);
        resolve(msg);
      });
    });
  workers.forEach((w, i) => {
    w.on('message', (msg) => {
      if (msg.type === 'fatal') fail(`worker ${i} failed: ${msg.error}`);
      deliver(i, msg);
    });
    w.on('error', (e) => fail(`worker ${i} failed: ${e && e.stack ? e.stack : e}`));
  });

  // Setup: every editor connected and synced, or exit 1.
  const setupLimit = opts.connectTimeoutMs * Math.ceil((docCount * opts.editors) / opts.connectConcurrency) + 30000;
  let connected;
  try {
    connected = await Promise.all(workers.map((_, i) => receive(i, setupLimit)));
  } catch (e) {
    fail(`setup: ${e.message}`);
  }
  const failed = connected.reduce((n, c) => n + c.failed, 0);
  const connectMs = Math.max(...connected.map((c) => c.connectMs));
  if (failed > 0) {
    workers.forEach((w) => w.postMessage({ run: false }));
    await Promise.all(workers.map((w) => new Promise((resolve) => w.once('exit', resolve))));
    fail(`setup: ${failed} of ${docCount * opts.editors} editors did not connect and sync`, {
      samples: connected.flatMap((c) => c.failures).slice(0, MAX_ERROR_SAMPLES),
      connectMs: round(connectMs),
    });
  }
  process.stderr.write(`collab-bench: ${docCount * opts.editors} editors synced in ${Math.round(connectMs)} ms; typing for ${opts.seconds} s\n`);

  // Run.
  const startAt = now() + 200;
  workers.forEach((w) => w.postMessage({ run: true, startAt }));
  const runLimit = opts.seconds * 1000 + 60000;
  let sent;
  try {
    sent = await Promise.all(workers.map((_, i) => receive(i, runLimit)));
  } catch (e) {
    fail(`run: ${e.message}`);
  }
  const updatesSent = sent.reduce((n, s) => n + s.updatesSent, 0);
  // Drain: the last updates are in flight; give them --drain-ms.
  await sleep(opts.drainMs);
  workers.forEach((w) => w.postMessage({ drained: true }));
  let results;
  try {
    results = await Promise.all(workers.map((_, i) => receive(i, 60000)));
  } catch (e) {
    fail(`collecting results: ${e.message}`);
  }

  let total = 0;
  for (const r of results) total += r.latencies.length;
  const all = new Float64Array(total);
  let offset = 0;
  let sum = 0;
  for (const r of results) {
    all.set(r.latencies, offset);
    offset += r.latencies.length;
    for (const x of r.latencies) sum += x;
  }
  all.sort();
  const errors = results.reduce((n, r) => n + r.errors.count, 0);
  const summary = {
    docs: docCount,
    editors: opts.editors,
    updatesSent,
    observations: total,
    p50Ms: percentile(all, 50),
    p95Ms: percentile(all, 95),
    p99Ms: percentile(all, 99),
    maxMs: total > 0 ? round(all[total - 1]) : null,
    errors,
    expectedObservations: updatesSent * (opts.editors - 1),
    updatesPlanned: Math.round(docCount * opts.editors * opts.rate * opts.seconds),
    meanMs: total > 0 ? round(sum / total) : null,
    seconds: opts.seconds,
    rate: opts.rate,
    workers: workerCount,
    connectMs: round(connectMs),
    eventLoopLagMaxMs: round(Math.max(...results.map((r) => r.lagMaxMs))),
    errorSamples: results.flatMap((r) => r.errors.samples).slice(0, MAX_ERROR_SAMPLES),
  };
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  process.exit(0);
}

if (isMainThread) {
  main().catch((e) => fail(`unexpected: ${e && e.stack ? e.stack : e}`));
}
