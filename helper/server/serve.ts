// The link server: one Node process that runs `spacer link`, `spacer finish` and `spacer compact`
// for every build of a workspace, so that a link step does not pay, three times per link, for
// Node's start, the bundle's compile, iced-x86's WebAssembly and a cold JIT (together most of a
// warm relink's helper time).
// Make starts the C client (server/client.c) instead of Node; the client hands its command line,
// folder and environment to this process over a Unix socket and relays the output and the exit
// status. Without a server the client runs the command itself and starts one in the background.
//
// Requests run one at a time, each with the client's folder and environment, exactly as the CLI
// would run them (run.ts): the same code, the same output bytes. The server stops after an idle
// spell (SPACER_SERVER_IDLE seconds, default 600), when the helper is rebuilt (its code id
// changes: the request goes back to the client, which runs it itself), or when its socket is
// taken over.
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { readFileSync, statSync, unlinkSync } from 'node:fs';
import { exitFrame, frame, parseRequest, type Request } from './protocol.js';
import { runCli } from '../run.js';
import { helperCodeId, CODE_ID_FILE } from '../cache/code-id.js';
import { packageRoot } from '../paths.js';
import { join } from 'node:path';
import { keepBuffers } from '../util/buffers.js';
import { keepEntries } from '../cache/store.js';
import { started } from '../util/tools.js';
import { deferAfterReply, runAfterReply } from '../util/after-reply.js';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

const MAX_REQUEST = 64 << 20;
/** A client sends its request as soon as it connects; one silent this long is dropped. */
const REQUEST_MS = 10_000;
const MAX_RSS = 2 * 2 ** 30;

/** The code id as the bundle on disk has it now (undefined: not a bundle build). */
function codeIdOnDisk(): string | undefined {
  try {
    return readFileSync(join(packageRoot(), 'helper', 'dist', CODE_ID_FILE), 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** Whether a server already answers at `path`. */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = createConnection(path);
    c.once('connect', () => (c.destroy(), resolve(true)));
    c.once('error', () => resolve(false));
  });
}

/** Listens at `path`, taking it over from a server that no longer answers. */
async function listen(server: Server, path: string): Promise<boolean> {
  for (let attempt = 0; attempt < 2; attempt++) {
    const err = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
      server.once('error', resolve);
      server.listen(path, () => resolve(undefined));
    });
    if (!err) return true;
    if (err.code !== 'EADDRINUSE' || (await answers(path))) return false;
    try {
      unlinkSync(path);
    } catch {
      // Gone already.
    }
  }
  return false;
}

/**
 * Makes process.env exactly `to`, touching only the variables that differ: each write or delete
 * is a setenv, and the requests of one build come with one environment.
 */
function setEnv(to: Record<string, string | undefined>): void {
  for (const k of Object.keys(process.env)) if (!Object.hasOwn(to, k)) delete process.env[k];
  for (const [k, v] of Object.entries(to))
    if (v === undefined) delete process.env[k];
    else if (process.env[k] !== v) process.env[k] = v;
}

/** Runs `r` as the CLI would, its output sent to `out` as frames; gives the exit status. */
async function runRequest(r: Request, out: (b: Buffer) => void): Promise<number> {
  const cwd = process.cwd();
  const writes = { o: process.stdout.write, e: process.stderr.write };
  const relay =
    (kind: 'o' | 'e') =>
    (chunk: string | Uint8Array, enc?: unknown, cb?: unknown): boolean => {
      const b = typeof chunk === 'string' ? Buffer.from(chunk, enc as BufferEncoding) : chunk;
      out(frame(kind, Buffer.from(b)));
      const done = typeof enc === 'function' ? enc : cb;
      if (typeof done === 'function') process.nextTick(done as () => void);
      return true;
    };
  setEnv(r.env);
  process.stdout.write = relay('o') as typeof process.stdout.write;
  process.stderr.write = relay('e') as typeof process.stderr.write;
  try {
    process.chdir(r.cwd);
    return await runCli(r.argv);
  } catch (e) {
    // A bug: its stack, as the CLI would print it.
    out(frame('e', `${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`));
    return 1;
  } finally {
    process.stdout.write = writes.o;
    process.stderr.write = writes.e;
    // The environment stays the client's until the next request sets its own.
    process.chdir(cwd);
  }
}

/**
 * Reads one request off `sock` (undefined: the client went away, sent too much, or sent nothing
 * for REQUEST_MS). Called as the connection comes in, not when its turn in the queue comes: a
 * client that connects and closes at once (another server checking that this one answers) has
 * ended by then, and an `end` missed would hold the queue, and every build after it, forever.
 */
function readRequest(sock: Socket): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    let have = 0,
      settled = false;
    const done = (b: Buffer | undefined) => {
      if (settled) return;
      settled = true;
      sock.setTimeout(0);
      sock.removeAllListeners('data');
      if (!b) sock.destroy();
      resolve(b);
    };
    sock.setTimeout(REQUEST_MS, () => done(undefined));
    sock.on('data', (d: Buffer) => {
      parts.push(d);
      have += d.length;
      if (have < 4) return;
      const all = parts.length === 1 ? parts[0] : Buffer.concat(parts);
      const len = all.readUInt32LE(0);
      if (len > MAX_REQUEST) return done(undefined);
      if (all.length >= 4 + len) done(all.subarray(4, 4 + len));
    });
    sock.once('end', () => done(undefined));
    sock.once('close', () => done(undefined));
    sock.once('error', () => done(undefined));
  });
}

/** V8's collector, as `--expose-gc` gives it (undefined where V8 refuses). */
let gc: ((o?: { type?: 'minor' | 'major' }) => void) | undefined;

/** A minor collection (the young generation only: a few milliseconds), where V8 allows it. */
function collectYoung(): void {
  try {
    gc?.({ type: 'minor' });
  } catch {
    gc = undefined;
  }
}

/** Serves requests at `socketPath` until idle for `idleSec` seconds. */
export async function serve(socketPath: string, idleSec: number): Promise<void> {
  const id = helperCodeId();
  // Work a request leaves for after its answer waits for it (util/after-reply.ts).
  deferAfterReply();
  try {
    setFlagsFromString('--expose-gc');
    gc = runInNewContext('gc') as typeof gc;
  } catch {
    gc = undefined;
  }
  // Requests run one at a time (`queue`): each may take the image buffers the last one used.
  keepBuffers();
  // Cache entries read or written stay in memory: a relink stats them instead of reading them.
  keepEntries();
  // A program started from here forks this process: its next requests fault on every page they
  // write (design.md, "The link server"). None of make's commands does; if one ever does, the log
  // says so (test/server.test.ts looks).
  const log = process.stderr.write.bind(process.stderr);
  // A job left for after an answer that failed: a line in the log (its command is told).
  const later = (line: string) => void log(`spacer server: ${line}\n`);
  started.note = (cmd) =>
    void log(`spacer server: started ${cmd}: a fork of the server slows its next requests\n`);
  const server = createServer({ allowHalfOpen: true });
  let queue = Promise.resolve();
  let pending = 0;
  let stopping = false;
  let timer: NodeJS.Timeout | undefined;
  const ino = () => {
    try {
      return statSync(socketPath).ino;
    } catch {
      return -1;
    }
  };
  const stop = () => {
    if (stopping) return;
    stopping = true;
    if (timer) clearTimeout(timer);
    server.close();
    // Only our own socket: another server may have taken the name.
    if (ino() === mine) unlinkSync(socketPath);
  };
  const idle = () => {
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => {
      if (!pending) stop();
    }, idleSec * 1000);
    timer.unref();
  };
  server.on('connection', (sock) => {
    pending++;
    sock.on('error', () => {});
    const request = readRequest(sock);
    const send = (b: Buffer) => {
      if (!sock.destroyed) sock.write(b);
    };
    queue = queue
      .then(async () => {
        const body = await request;
        if (!body) return;
        const p = parseRequest(body);
        // A server is started by the client, never through another one.
        const r = typeof p !== 'string' && p.argv[0] === 'server' ? 'not through the server' : p;
        // A rebuilt helper, or a server taken over or stopping: the client runs it itself.
        if (typeof r === 'string' || stopping || ino() !== mine || codeIdOnDisk() !== id) {
          send(frame('r', typeof r === 'string' ? r : 'stale'));
          if (typeof r !== 'string') stop();
          return;
        }
        const t = performance.now();
        const code = await runRequest(r, send);
        const ms = (performance.now() - t).toFixed(0);
        send(exitFrame(code));
        // The client has its answer (make runs ld, or strip, now): what the request left for
        // later lands before the next request is read (util/after-reply.ts), then the young
        // objects it dropped are collected, so that the next request does not stop for them.
        runAfterReply(later);
        const done = (performance.now() - t).toFixed(0);
        process.stderr.write(
          `served: ${r.argv[0] ?? ''} (exit ${code}) in ${ms} ms, ${done} ms with its later work\n`,
        );
        if (pending === 1) collectYoung();
        // The peak, which getrusage gives in one system call (the current size reads /proc).
        if (process.resourceUsage().maxRSS * 1024 > MAX_RSS) stop();
      })
      .catch(() => {})
      .finally(() => {
        pending--;
        sock.end();
        if (!stopping) idle();
      });
  });
  if (!(await listen(server, socketPath))) return;
  const mine = ino();
  idle();
  // Killed: the socket goes with the process (a request under way is lost; its files land
  // whole or not at all). What an answered request left for later lands first (a link's map).
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const)
    process.once(sig, () => {
      stop();
      runAfterReply(later);
      process.exit(128 + (sig === 'SIGHUP' ? 1 : sig === 'SIGINT' ? 2 : 15));
    });
  process.stderr.write(`spacer server: pid ${process.pid} at ${socketPath}, helper ${id}\n`);
}
