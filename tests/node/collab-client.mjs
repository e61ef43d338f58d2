// Real y-websocket clients (yjs + y-websocket 2.x's WebsocketProvider, the pair Mikoto's web
// client uses) driven over stdin/stdout, for the collaborative-document socket's integration
// tests (tests/integration/common/collab.rs).
//
//   node collab-client.mjs
//
// One process hosts any number of named clients, each its own Y.Doc and WebsocketProvider.
// It prints {"event":"ready"} once, then reads one JSON command per stdin line and answers
// every command with exactly one line carrying the command's id:
//
//   {"id": <id>, "ok": true, ...}          or          {"id": <id>, "ok": false, "error": "..."}
//
// Commands ("name" picks the client; "type" is the Y.Text's name in the doc, default "content"):
//
//   {"cmd":"open","name":"a","url":"ws://127.0.0.1:PORT/collab","room":"<channelId>",
//    "token":"<token>"|null, "reconnect":false, "timeoutMs":10000, "params":{...}?}
//       new WebsocketProvider(url, room, doc, {params: {token, ...params}}): y-websocket connects
//       to <url>/<room>?token=<token> (no token parameter when token is null or absent).
//       Cross-tab BroadcastChannel sync is off, so clients in this process only meet through
//       the server. With "reconnect": false (the default) the provider stops after its first
//       close, so a test sees the close code. Replies once the provider is synced (has
//       received sync step 2) with {"clientId"}; with ok:false when the socket closes first
//       (with "code", "reason" and "lastError", the last connection error, e.g. "Unexpected
//       server response: 401") or after timeoutMs. A client whose open failed stays known
//       under its name (its events and "status" remain readable) until "close".
//   {"cmd":"insert","name":"a","index":0,"text":"hi"}         Y.Text insert
//   {"cmd":"delete","name":"a","index":0,"length":2}          Y.Text delete
//   {"cmd":"text","name":"a"}                                  -> {"text"}
//   {"cmd":"awareness","name":"a","state":{...}|null}          sets the local awareness state
//   {"cmd":"peers","name":"a"}                                 -> {"states":{"<clientId>":state},"self":<clientId>}
//   {"cmd":"waitText","name":"a","text":"...","timeoutMs":5000}
//       ok when the text equals "text" within the time, else ok:false with {"text": <last>}
//   {"cmd":"waitPeers","name":"a","count":2,"exact":false,"timeoutMs":5000}
//       ok when the client knows >= count awareness states (== count with "exact"), with
//       {"count"}; else ok:false with the last count
//   {"cmd":"status","name":"a"}
//       -> {"status":"connecting|connected|disconnected","synced","closes":[{"code","reason"}],
//           "lastError","clientId"}
//   {"cmd":"rawSend","name":"a","base64":"..."} | {...,"bytes":[1,2]} | {...,"text":"..."}
//       sends raw bytes (a binary frame) or a text frame on the provider's socket; ok:false
//       when it is not open
//   {"cmd":"close","name":"a"}                                 destroys the provider and the doc
//   {"cmd":"ping"}                                             -> ok
//
// Notifications (no id):
//   {"event":"status","name":"a","status":"connecting|connected|disconnected"}
//   {"event":"synced","name":"a"}
//   {"event":"close","name":"a","code":4006,"reason":"..."}   the socket closed (from the
//       provider's connection-close event); "code" is null (with "local": true) when the
//       client closed it itself (the "close" command, y-websocket's 30 s silence check)
//   {"event":"error","name":"a","message":"..."}               a connection error
//   {"event":"uncaught","message":"..."}                       an exception thrown outside a
//       command (e.g. by y-websocket while decoding a frame); the process keeps running
//
// Anything y-websocket or yjs logs goes to stderr. The process exits when stdin closes.
import process from 'node:process';
import readline from 'node:readline';

import WebSocket from 'ws';
import { WebsocketProvider } from 'y-websocket';
import * as Y from 'yjs';

// stdout carries only protocol lines.
console.log = (...args) => console.error(...args);
console.info = (...args) => console.error(...args);
// y-websocket adds a process 'exit' listener per provider.
process.setMaxListeners(0);

function emit(value) {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

process.on('uncaughtException', (e) => {
  console.error('collab-client: uncaught exception:', e);
  emit({ event: 'uncaught', message: String(e && e.stack ? e.message : e) });
});
process.on('unhandledRejection', (e) => {
  console.error('collab-client: unhandled rejection:', e);
  emit({ event: 'uncaught', message: String(e && e.message ? e.message : e) });
});

/** @type {Map<string, Client>} */
const clients = new Map();

class CommandError extends Error {
  constructor(message, extra = {}) {
    super(message);
    this.extra = extra;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function str(cmd, field) {
  const v = cmd[field];
  if (typeof v !== 'string') throw new CommandError(`"${field}" must be a string`);
  return v;
}

function int(cmd, field, fallback) {
  const v = cmd[field] ?? fallback;
  if (!Number.isInteger(v) || v < 0) throw new CommandError(`"${field}" must be a non-negative integer`);
  return v;
}

class Client {
  constructor(name, url, room, token, reconnect, params) {
    this.name = name;
    this.doc = new Y.Doc();
    this.status = 'connecting';
    this.closes = [];
    this.lastError = null;
    this.destroyed = false;
    const allParams = { ...params };
    if (typeof token === 'string') allParams.token = token;
    this.provider = new WebsocketProvider(url, room, this.doc, {
      WebSocketPolyfill: WebSocket,
      params: allParams,
      connect: false,
      disableBc: true,
      resyncInterval: -1,
    });
    const p = this.provider;
    p.on('status', ({ status }) => {
      this.status = status;
      emit({ event: 'status', name, status });
    });
    p.on('sync', (synced) => {
      if (synced) emit({ event: 'synced', name });
    });
    p.on('connection-error', (e) => {
      this.lastError = e && e.message ? String(e.message) : 'connection error';
      emit({ event: 'error', name, message: this.lastError });
    });
    p.on('connection-close', (e) => {
      if (!reconnect) p.shouldConnect = false;
      if (this.status !== 'disconnected') this.status = 'disconnected';
      if (e && typeof e.code === 'number') {
        const close = { code: e.code, reason: String(e.reason ?? '') };
        this.closes.push(close);
        emit({ event: 'close', name, ...close });
      } else {
        this.closes.push({ code: null, reason: '', local: true });
        emit({ event: 'close', name, code: null, reason: '', local: true });
      }
    });
    p.connect();
  }

  text(type) {
    return this.doc.getText(type).toString();
  }

  peerStates() {
    const states = {};
    for (const [id, state] of this.provider.awareness.getStates()) states[String(id)] = state;
    return states;
  }

  destroy() {
    if (this.destroyed) return;
    this.destroyed = true;
    this.provider.destroy();
    this.doc.destroy();
  }
}

function client(cmd) {
  const name = str(cmd, 'name');
  const c = clients.get(name);
  if (!c) throw new CommandError(`no client named ${JSON.stringify(name)}`);
  return c;
}

const typeOf = (cmd) => (typeof cmd.type === 'string' ? cmd.type : 'content');

async function open(cmd) {
  const name = str(cmd, 'name');
  if (clients.has(name)) throw new CommandError(`a client named ${JSON.stringify(name)} exists: close it first`);
  const url = str(cmd, 'url');
  const room = str(cmd, 'room');
  const token = cmd.token ?? null;
  if (token !== null && typeof token !== 'string') throw new CommandError('"token" must be a string or null');
  const params = cmd.params ?? {};
  if (typeof params !== 'object' || Array.isArray(params)) throw new CommandError('"params" must be an object');
  const timeoutMs = int(cmd, 'timeoutMs', 10000);
  const reconnect = cmd.reconnect === true;
  const c = new Client(name, url, room, token, reconnect, params);
  clients.set(name, c);
  const p = c.provider;
  await new Promise((resolve, reject) => {
    let done = false;
    const finish = (fn, value) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      p.off('sync', onSync);
      p.off('connection-close', onClose);
      fn(value);
    };
    const onSync = (synced) => {
      if (synced) finish(resolve);
    };
    const onClose = (e) => {
      if (reconnect) return; // keeps trying until the timeout
      const code = e && typeof e.code === 'number' ? e.code : null;
      const reason = e ? String(e.reason ?? '') : '';
      finish(
        reject,
        new CommandError(`the socket closed before the doc synced (code ${code}${reason ? `, reason ${JSON.stringify(reason)}` : ''}${c.lastError ? `; ${c.lastError}` : ''})`, {
          code,
          reason,
          lastError: c.lastError,
        }),
      );
    };
    const timer = setTimeout(
      () =>
        finish(
          reject,
          new CommandError(`not synced within ${timeoutMs} ms`, {
            code: null,
            status: c.status,
            lastError: c.lastError,
          }),
        ),
      timeoutMs,
    );
    if (p.synced) {
      finish(resolve);
      return;
    }
    p.on('sync', onSync);
    p.on('connection-close', onClose);
  });
  return { clientId: c.doc.clientID };
}

async function waitFor(check, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (check()) return true;
    if (Date.now() >= deadline) return false;
    await sleep(10);
  }
}

function rawBytes(cmd) {
  if (typeof cmd.base64 === 'string') return { data: Buffer.from(cmd.base64, 'base64'), binary: true };
  if (Array.isArray(cmd.bytes)) {
    if (!cmd.bytes.every((b) => Number.isInteger(b) && b >= 0 && b <= 255)) {
      throw new CommandError('"bytes" must hold integers 0..=255');
    }
    return { data: Buffer.from(cmd.bytes), binary: true };
  }
  if (typeof cmd.text === 'string') return { data: cmd.text, binary: false };
  throw new CommandError('give "base64", "bytes" or "text"');
}

const handlers = {
  ping: async () => ({}),
  open,
  insert: async (cmd) => {
    const c = client(cmd);
    c.doc.getText(typeOf(cmd)).insert(int(cmd, 'index'), str(cmd, 'text'));
    return {};
  },
  delete: async (cmd) => {
    const c = client(cmd);
    c.doc.getText(typeOf(cmd)).delete(int(cmd, 'index'), int(cmd, 'length'));
    return {};
  },
  text: async (cmd) => ({ text: client(cmd).text(typeOf(cmd)) }),
  awareness: async (cmd) => {
    const c = client(cmd);
    const state = cmd.state ?? null;
    if (state !== null && (typeof state !== 'object' || Array.isArray(state))) {
      throw new CommandError('"state" must be an object or null');
    }
    c.provider.awareness.setLocalState(state);
    return {};
  },
  peers: async (cmd) => {
    const c = client(cmd);
    return { states: c.peerStates(), self: c.doc.clientID };
  },
  waitText: async (cmd) => {
    const c = client(cmd);
    const want = str(cmd, 'text');
    const type = typeOf(cmd);
    const ok = await waitFor(() => c.destroyed || c.text(type) === want, int(cmd, 'timeoutMs', 5000));
    if (c.destroyed) throw new CommandError('the client was closed');
    const text = c.text(type);
    if (!ok) throw new CommandError(`text is ${JSON.stringify(text)}, not ${JSON.stringify(want)}`, { text });
    return { text };
  },
  waitPeers: async (cmd) => {
    const c = client(cmd);
    const want = int(cmd, 'count');
    const exact = cmd.exact === true;
    const count = () => c.provider.awareness.getStates().size;
    const ok = await waitFor(
      () => c.destroyed || (exact ? count() === want : count() >= want),
      int(cmd, 'timeoutMs', 5000),
    );
    if (c.destroyed) throw new CommandError('the client was closed');
    if (!ok) {
      throw new CommandError(`the client knows ${count()} awareness states, wanted ${exact ? '' : '>= '}${want}`, {
        count: count(),
        states: c.peerStates(),
      });
    }
    return { count: count() };
  },
  status: async (cmd) => {
    const c = client(cmd);
    return {
      status: c.status,
      synced: c.provider.synced,
      closes: c.closes,
      lastError: c.lastError,
      clientId: c.doc.clientID,
    };
  },
  rawSend: async (cmd) => {
    const c = client(cmd);
    const { data, binary } = rawBytes(cmd);
    const ws = c.provider.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) throw new CommandError('the socket is not open');
    await new Promise((resolve, reject) => ws.send(data, { binary }, (e) => (e ? reject(e) : resolve())));
    return {};
  },
  close: async (cmd) => {
    const c = client(cmd);
    clients.delete(c.name);
    c.destroy();
    return {};
  },
};

async function handle(line) {
  if (line.trim() === '') return;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (e) {
    emit({ id: null, ok: false, error: `not JSON: ${e.message}` });
    return;
  }
  const id = cmd && typeof cmd === 'object' ? (cmd.id ?? null) : null;
  const handler = cmd && typeof cmd.cmd === 'string' && Object.hasOwn(handlers, cmd.cmd) ? handlers[cmd.cmd] : null;
  if (!handler) {
    emit({ id, ok: false, error: `unknown command ${JSON.stringify(cmd && cmd.cmd)}` });
    return;
  }
  try {
    const result = await handler(cmd);
    emit({ id, ok: true, ...result });
  } catch (e) {
    const extra = e instanceof CommandError ? e.extra : {};
    emit({ id, ok: false, error: String(e && e.message ? e.message : e), ...extra });
  }
}

function shutdown() {
  for (const c of clients.values()) {
    try {
      c.destroy();
    } catch {
      // exiting anyway
    }
  }
  process.exit(0);
}

readline.createInterface({ input: process.stdin, crlfDelay: Infinity }).on('line', (line) => {
  handle(line);
}).on('close', shutdown);
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

emit({ event: 'ready' });
