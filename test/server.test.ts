// The link server (#14): make runs the client (helper/dist/spacer-client), which hands `spacer
// link` and `spacer finish` to one long-lived Node process. What the server gives is what a Node
// process per command gives: the same scripts, images and map bytes, the same output and exit
// status; a rebuilt helper, SPACER_SERVER=off or an idle spell sends the client back to Node.
import test from 'ava';
import { execa } from 'execa';
import {
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createConnection } from 'node:net';
import { once } from 'node:events';
import { join, relative } from 'node:path';
import { helperRunner, linkStepOnce, startServer } from '../helper/bench/linkstep.js';
import { encodeRequest, exitFrame, socketFolder } from '../helper/server/protocol.js';
import {
  compileWorkspace,
  loadApps,
  objectsFor,
  type CompiledWorkspace,
} from '../helper/workspace/index.js';
import { root, tempDir } from './_fixtures.js';

const dist = join(root, 'helper', 'dist');
const client = join(dist, 'spacer-client');
const out = tempDir('server');
const apps = loadApps().slice(0, 2);
let compiled: CompiledWorkspace;

test.before(async () => {
  compiled = await compileWorkspace(join(out, 'objects'), { apps });
});

/** The socket folder the client uses under `runDir`, and the server's log lines. */
const sockets = socketFolder;
const served = (runDir: string) =>
  readdirSync(sockets(runDir))
    .filter((f) => f.endsWith('.log'))
    .flatMap((f) => readFileSync(join(sockets(runDir), f), 'utf8').split('\n'))
    .filter((l) => l.startsWith('served: '));

/** Every file under `dir`, by relative path, with its bytes. */
function files(dir: string): Map<string, Buffer> {
  const m = new Map<string, Buffer>();
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else m.set(relative(dir, p), readFileSync(p));
    }
  };
  walk(dir);
  return m;
}

test.serial(
  'through the link server, link and finish give the bytes Node per command gives',
  async (t) => {
    t.true(existsSync(client), `${client}: not built (npm run build builds it with cc)`);
    const runDir = join(out, 'run');
    await startServer(runDir);
    for (const aslr of [false, true]) {
      const got: Record<string, Map<string, Buffer>> = {};
      for (const server of [false, true]) {
        // One folder for both (the plan names the map and script by path), made afresh.
        const dir = join(out, aslr ? 'aslr' : 'spacer');
        rmSync(dir, { recursive: true, force: true });
        const map = join(dir, 'map', 'map.json');
        mkdirSync(join(dir, 'map'), { recursive: true });
        for (const app of apps) {
          const objects = objectsFor(app, compiled);
          await linkStepOnce({ image: app.name, objects, dir, map, aslr, runDir, server });
        }
        // The images, scripts and plans, and the map (its cache aside: entries carry no output;
        // the precompacted copy and the stamp aside: only Node per command makes them, the client
        // finishes the .dbg in the link step and compacts in the image rule's strip; the bench's
        // timings of the client aside; the journal aside: the files it landed are compared, and
        // what it still holds depends on when a checkpoint came).
        got[String(server)] = new Map(
          [...files(dir)].filter(
            ([p]) =>
              !p.startsWith('map/cache/') &&
              !p.endsWith('.log') &&
              !p.endsWith('journal.json') &&
              !/\.(compact|finished|client-times)/.test(p),
          ),
        );
      }
      const [node, srv] = [got.false, got.true];
      t.true(node.size > 8, `${node.size} files`);
      t.deepEqual([...srv.keys()].sort(), [...node.keys()].sort());
      for (const [p, b] of node) t.true(b.equals(srv.get(p)!), `${aslr ? 'aslr' : 'spacer'}: ${p}`);
    }
    // Both layouts' link and finish of both apps went through the server.
    const lines = served(runDir);
    t.true(lines.filter((l) => l.startsWith('served: link ')).length >= 4, lines.join('\n'));
    t.true(lines.filter((l) => l.startsWith('served: finish ')).length >= 4, lines.join('\n'));
    t.true(lines.filter((l) => l.startsWith('served: compact ')).length >= 4, lines.join('\n'));
    // And none of them started a program from the server (a fork costs its next requests).
    const log = readdirSync(sockets(runDir))
      .filter((f) => f.endsWith('.log'))
      .map((f) => readFileSync(join(sockets(runDir), f), 'utf8'))
      .join('');
    t.notRegex(log, /spacer server: started /);
  },
);

test.serial(
  'errors through the server: the same line and exit status as Node per command',
  async (t) => {
    const runDir = join(out, 'run-errors');
    await startServer(runDir);
    const before = served(runDir).length;
    const viaServer = helperRunner(runDir);
    const viaNode = helperRunner(runDir, false);
    const cases = [
      ['bogus'], // usage: 2
      ['verify', join(out, 'no-such.dbg')], // a user's error: 1
      ['map', 'show', '--map', join(out, 'no-such', 'map.json')],
      ['link', '--help'],
    ];
    for (const args of cases) {
      const [a, b] = await Promise.all([
        viaServer.run(args).catch((e: unknown) => e as Awaited<ReturnType<typeof viaServer.run>>),
        viaNode.run(args).catch((e: unknown) => e as Awaited<ReturnType<typeof viaNode.run>>),
      ]);
      t.is(a.exitCode, b.exitCode, args.join(' '));
      t.is(a.stdout, b.stdout, args.join(' '));
      t.is(a.stderr, b.stderr, args.join(' '));
    }
    for (let i = 0; i < 50 && served(runDir).length - before < cases.length; i++)
      await new Promise((r) => setTimeout(r, 100));
    t.is(served(runDir).length - before, cases.length);
  },
);

test.serial(
  'a connection that closes at once, or says nothing, holds up no request after it',
  async (t) => {
    const runDir = join(out, 'run-probe');
    await startServer(runDir);
    const name = readdirSync(sockets(runDir)).find((f) => f.endsWith('.sock'))!;
    const path = join(sockets(runDir), name);
    const connect = async () => {
      const c = createConnection(path);
      c.on('error', () => {});
      await once(c, 'connect');
      return c;
    };
    const r = helperRunner(runDir);
    const command = () => {
      const [cmd, ...rest] = r.argv(['cache', 'show', '--help']);
      return execa(cmd, rest, { env: r.env, timeout: 40_000, reject: false });
    };
    const before = served(runDir).length;
    // A: a request sent in two parts, so that it holds the head of the queue meanwhile.
    const req = encodeRequest({ cwd: out, argv: ['cache', 'show', '--help'], env: {} });
    const a = await connect();
    a.write(req.subarray(0, 2));
    // B: connects and closes at once, as another server does to check that this one answers.
    (await connect()).destroy();
    await new Promise((res) => setTimeout(res, 300));
    const answer: Buffer[] = [];
    a.on('data', (d: Buffer) => answer.push(d));
    a.write(req.subarray(2));
    await once(a, 'end');
    t.true(Buffer.concat(answer).subarray(-9).equals(exitFrame(0)), 'A is answered');
    // The next command is served: B did not stop the queue.
    const c = await command();
    t.is(c.exitCode, 0, c.stderr);
    t.false(c.timedOut);
    // D: connects and sends nothing; it is dropped after the server's wait (10 s), and the command
    // after it is served.
    const d = await connect();
    const e = await command();
    t.is(e.exitCode, 0, e.stderr);
    t.false(e.timedOut);
    d.destroy();
    for (let i = 0; i < 50 && served(runDir).length - before < 3; i++)
      await new Promise((res) => setTimeout(res, 100));
    t.is(served(runDir).length - before, 3, 'A, C and E through the server');
  },
);

test.serial(
  'a rebuilt helper, SPACER_SERVER=off or an idle spell: the client runs Node itself',
  async (t) => {
    // A copy of the package whose code id this test can change, as `npm run build` would.
    const pkg = join(out, 'pkg');
    mkdirSync(join(pkg, 'helper'), { recursive: true });
    cpSync(dist, join(pkg, 'helper', 'dist'), { recursive: true });
    for (const f of ['package.json', 'linker-templates', 'node_modules'])
      symlinkSync(join(root, f), join(pkg, f));
    const bundle = join(pkg, 'helper', 'dist', 'spacer.mjs');
    const pkgClient = join(pkg, 'helper', 'dist', 'spacer-client');
    const runDir = join(out, 'run-stale');
    mkdirSync(runDir, { mode: 0o700 });
    const env = { XDG_RUNTIME_DIR: runDir, SPACER_SERVER_IDLE: '2' };
    const run = (extra: Record<string, string> = {}) =>
      execa(pkgClient, [process.execPath, bundle, 'cache', 'show', '--help'], {
        env: { ...env, ...extra },
      });
    const sock = () => readdirSync(sockets(runDir)).filter((f) => f.endsWith('.sock'));
    const wait = async (what: () => boolean) => {
      for (let i = 0; i < 100 && !what(); i++) await new Promise((r) => setTimeout(r, 100));
      return what();
    };
    const help = (await run()).stdout;
    t.true(await wait(() => sock().length === 1), 'the first run starts a server');
    t.is((await run()).stdout, help);
    t.true(await wait(() => served(runDir).length === 1), 'the second run is served');
    // The helper rebuilt: the server hands the request back and stops; the client runs Node.
    const id = join(pkg, 'helper', 'dist', 'code-id');
    writeFileSync(id, `${readFileSync(id, 'utf8').trim()}0\n`);
    t.is((await run()).stdout, help);
    t.true(await wait(() => sock().length === 0), 'the stale server stops');
    // Off: Node only, no server started.
    t.is((await run({ SPACER_SERVER: 'off' })).stdout, help);
    await new Promise((r) => setTimeout(r, 500));
    t.is(sock().length, 0);
    // A new server (the next run starts it) stops after SPACER_SERVER_IDLE seconds.
    await run();
    t.true(await wait(() => sock().length === 1), 'started again');
    t.true(await wait(() => sock().length === 0), 'stopped when idle');
  },
);

test('each command line starts with the cache off and its counters at zero', async (t) => {
  const { runCli } = await import('../helper/run.js');
  const { cacheUse } = await import('../helper/cache/store.js');
  Object.assign(cacheUse, { dir: join(out, 'cache'), hits: 5, misses: 3 });
  const run = cacheUse.run;
  const write = process.stdout.write;
  process.stdout.write = (() => true) as typeof process.stdout.write;
  try {
    t.is(await runCli(['cache', 'show', '--help']), 0);
  } finally {
    process.stdout.write = write;
  }
  t.like(cacheUse, { dir: undefined, hits: 0, misses: 0, run: run + 1 });
});

test('a link step command line seen before runs on the options it was parsed to, and no other', async (t) => {
  const { runCli, parsedAgain } = await import('../helper/run.js');
  const err = process.stderr.write,
    std = process.stdout.write;
  let said: string[] = [];
  process.stderr.write = ((s: string) => (said.push(String(s)), true)) as typeof err;
  process.stdout.write = (() => true) as typeof std;
  const run = async (argv: string[]) => {
    said = [];
    const code = await runCli(argv);
    return { code, said: said.join(''), again: parsedAgain.runs };
  };
  try {
    const missing = join(out, 'no-such-image.elf');
    const first = await run(['compact', missing, '--no-pack']);
    t.is(first.code, 1);
    t.regex(first.said, /no-such-image\.elf/);
    // The same command line: the same line and status, without yargs.
    const second = await run(['compact', missing, '--no-pack']);
    t.deepEqual({ ...second, again: second.again - first.again }, { ...first, again: 1 });
    // Another command line is parsed.
    const other = await run(['compact', `${missing}.2`, '--no-pack']);
    t.is(other.again, second.again);
    t.regex(other.said, /no-such-image\.elf\.2/);
    // A usage error is never remembered: it stays one.
    for (let i = 0; i < 2; i++) {
      const bad = await run(['compact', missing, '--no-such-option']);
      t.is(bad.code, 2);
      t.is(bad.again, other.again);
    }
    // Only the link step's commands are remembered.
    await run(['cache', 'show', '--help']);
    const help = await run(['cache', 'show', '--help']);
    t.is(help.again, other.again);
  } finally {
    process.stderr.write = err;
    process.stdout.write = std;
  }
});
