// The link step as make runs it (issue #14): `spacer link`, ld, `spacer finish`, and the image
// rule's strip, which also compacts. Through the link server, the client runs link, ld and finish
// (`spacer-client --link`, the .dbg rule's LD), then strip and the served `spacer compact`
// (`spacer-client --strip`); with Node per command, each is a command of its own and
// scripts/spacer-strip.sh takes the file the finish's --precompact left. Each helper command is
// a process of the client or of the bundled CLI (helper/dist/spacer.mjs), so Node's start-up
// counts as it does for a user. Per layout: ld's
// time, and the helper's on a cold link (the image new to the workspace map, its cache empty), on
// a new image of a workspace whose cache holds its other images' analyses, and on a warm relink
// (only the app's code changed). The map-size scaling is in mapscale.ts.
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';
import { execa } from 'execa';
import { copyMap } from '../layout/map-store.js';
import { mapGc } from '../mapcmd.js';
import { cacheDirFor } from '../cache/store.js';
import { packageRoot } from '../paths.js';
import {
  type AppSpec,
  linkCommand,
  objectBasename,
  objectsFor,
  platformScripts,
} from '../workspace/index.js';
import type { Workload } from './build.js';
import type { LayoutPlan } from './layouts.js';
import { lap, median, Progress, r1, r3 } from './progress.js';
import type { BenchResult, BenchRun, LinkStepFigures } from './types.js';
import { socketFolder } from '../server/protocol.js';

/** The command line that runs the CLI: the bundle when built, else the sources through tsx. */
export function spacerCommand(): { argv: string[]; entry: string } {
  const root = packageRoot();
  const bundle = join(root, 'helper', 'dist', 'spacer.mjs');
  if (existsSync(bundle)) return { argv: [bundle], entry: 'helper/dist/spacer.mjs' };
  return {
    argv: ['--import', 'tsx', join(root, 'helper', 'cli.ts')],
    entry: 'helper/cli.ts through tsx (no bundle: run npm run build)',
  };
}

/**
 * How make runs a helper command: through the link server's client when it is built (Linker.uk's
 * LIBSPACER_RUN), else Node. `server` false, or no socket folder `runDir`: Node, as with
 * SPACER_SERVER=off. The bench's server has a socket folder of its own and stops a minute after
 * the bench.
 */
export function helperRunner(runDir: string | undefined, server = true) {
  const cli = spacerCommand().argv;
  const client = join(packageRoot(), 'helper', 'dist', 'spacer-client');
  const viaClient = !!runDir && server && cli.length === 1 && existsSync(client);
  if (viaClient) mkdirSync(runDir, { recursive: true, mode: 0o700 });
  const env: Record<string, string> = viaClient
    ? { XDG_RUNTIME_DIR: runDir, SPACER_SERVER_IDLE: '60' }
    : { SPACER_SERVER: 'off' };
  const argv = (args: string[]) =>
    viaClient ? [client, process.execPath, ...cli, ...args] : [process.execPath, ...cli, ...args];
  return {
    viaClient,
    /** The client, which also runs the image rule's strip (`--strip`). */
    client,
    /** The environment of every helper command, and one's command line. */
    env,
    argv,
    run: (args: string[], extra: Record<string, string> = {}) => {
      const [cmd, ...rest] = argv(args);
      return execa(cmd, rest, { env: { ...env, ...extra } });
    },
  };
}

/** Starts the bench's link server (when make would use one) and waits until it answers. */
export async function startServer(runDir: string): Promise<void> {
  const r = helperRunner(runDir);
  if (!r.viaClient) return;
  for (let i = 0; i < 100; i++) {
    await r.run(['cache', 'show', '--help']);
    if (readdirSync(socketFolder(runDir)).some((f) => f.endsWith('.sock'))) return;
    await new Promise((res) => setTimeout(res, 50));
  }
}

/** One command of a link step, with the environment it adds. */
interface Step {
  name: string;
  argv: string[];
  env?: Record<string, string>;
}

const quote = (a: string) => `'${a.replaceAll("'", "'\\''")}'`;

/**
 * Runs `steps` one after another in one bash process and gives each one's milliseconds. As make
 * runs a rule's commands: each a child of a small process. Started from the bench's own process
 * (hundreds of MB at N = 1000), each fork would cost 10 to 20 ms that make never pays, and ld and
 * the helper would carry it alike. A failing step fails the whole, with its output.
 */
async function timedSteps(steps: Step[]): Promise<Record<string, number>> {
  const lines = steps.map((st, i) => {
    const env = Object.entries(st.env ?? {}).map(([k, v]) => `${k}=${quote(v)} `);
    return `a=$EPOCHREALTIME; ${env.join('')}${st.argv.map(quote).join(' ')}; b=$EPOCHREALTIME; echo "${i} \${a//[!0-9]/} \${b//[!0-9]/}"`;
  });
  const r = await execa('bash', ['-c', ['set -e', ...lines].join('\n')]);
  const ms: Record<string, number> = {};
  for (const line of r.stdout.split('\n')) {
    const m = /^(\d+) (\d+) (\d+)$/.exec(line);
    if (m) ms[steps[Number(m[1])].name] = (Number(m[3]) - Number(m[2])) / 1000;
  }
  for (const st of steps)
    if (ms[st.name] === undefined) throw new Error(`bench: no time for ${st.name} (bash >= 5?)`);
  return ms;
}

/** Milliseconds of one image's link step: ld and each helper command. */
export interface StepTimes {
  link: number;
  ld: number;
  finish: number;
  /** What the image rule's strip took beyond strip alone (the compaction, or taking its file). */
  compact: number;
}

/**
 * One link step of `image` from `objects` into `dir`, as make runs it; `map` undefined: the
 * layout without the helper (ld only, with `extraArgs`).
 */
export async function linkStepOnce(o: {
  image: string;
  objects: string[];
  dir: string;
  map?: string;
  aslr?: boolean;
  extraArgs?: string[];
  compact?: boolean;
  /** The analysis cache the helper uses (SPACER_CACHE); default: the one next to the map. */
  cache?: string;
  /** The link server's socket folder (helperRunner); without it, Node runs each command. */
  runDir?: string;
  /** false: Node runs each command even when a server could (SPACER_SERVER=off). */
  server?: boolean;
}): Promise<StepTimes> {
  const cli = spacerCommand().argv;
  const cache: Record<string, string> = o.cache ? { SPACER_CACHE: o.cache } : {};
  const runner = helperRunner(o.runDir, o.server !== false);
  const spacer = (name: string, args: string[]): Step => ({
    name,
    argv: runner.argv(args),
    env: { ...runner.env, ...cache },
  });
  const s = platformScripts();
  mkdirSync(join(o.dir, 'spacer'), { recursive: true });
  const out = join(o.dir, o.image);
  const lds = `${out}.lds`,
    dbg = `${out}.dbg`,
    elf = `${out}.elf`;
  const steps: Step[] = [];
  const aslr = o.aslr ? ['--aslr', '--seed', o.image] : [];
  const linkArgs = ['link', '--image', o.image, '--lds', s.defaultLds, '--out', lds];
  const link = o.map ? [...linkArgs, '--map', o.map, ...aslr, '--', ...o.objects] : [];
  const req = { objects: o.objects, extraLds: s.extraLds, out: dbg, extraArgs: o.extraArgs };
  const ldArgs = linkCommand({ ...req, defaultLds: o.map ? lds : s.defaultLds }, dbg);
  if (o.map) ldArgs.splice(ldArgs.indexOf('-o'), 0, '-Wl,--emit-relocs');
  const compact = o.map && o.compact !== false;
  // Through the link server, the .dbg rule's LD is the client, which runs link, ld and finish in
  // one process (Linker.uk) and notes how long each took (SPACER_CLIENT_TIMES).
  const times = join(o.dir, 'spacer', `${o.image}.client-times`);
  const together = !!o.map && runner.viaClient;
  if (together) {
    rmSync(times, { force: true });
    const finish = ['finish', '--plan', `${lds}.json`];
    steps.push({
      name: 'step',
      argv: [runner.client, '--link', process.execPath, cli[0], ...link].concat([
        '--spacer-finish',
        ...finish,
        '--spacer-ld',
        'gcc',
        ...ldArgs,
      ]),
      env: { ...runner.env, ...cache, SPACER_CLIENT_TIMES: times },
    });
  } else {
    if (o.map) steps.push(spacer('link', link));
    steps.push({ name: 'ld', argv: ['gcc', ...ldArgs] });
  }
  if (o.map && !together) {
    // With Node per command, the finish also strips and compacts a copy for the image rule.
    const pre = compact ? ['--precompact', elf, '--pack'] : [];
    const stamp = ['--stamp', join(o.dir, 'spacer', `${o.image}.finished`)];
    steps.push(spacer('finish', ['finish', '--plan', `${lds}.json`, dbg, ...pre, ...stamp]));
  }
  const strip = ['strip', '-s', '--remove-section=.spacer.rewrite', dbg, '-o'];
  if (compact) {
    steps.push({ name: 'strip', argv: [...strip, `${elf}.stripped`] });
    if (cli.length !== 1)
      // No bundle (sources through tsx): the wrapper cannot name the CLI; compact as before.
      steps.push(spacer('compact', ['compact', `${elf}.stripped`]));
    else {
      // As Linker.uk's STRIP for the image rule.
      const wrapper = join(packageRoot(), 'scripts', 'spacer-strip.sh');
      const rule = runner.viaClient
        ? [runner.client, '--strip', process.execPath, cli[0], '--pack', '--', ...strip, elf]
        : ['sh', wrapper, process.execPath, cli[0], '--pack', ...strip, elf];
      steps.push({ name: 'rule', argv: rule, env: { ...runner.env, ...cache } });
    }
  }
  const ms = await timedSteps(steps);
  if (together) {
    // The client's own figures: ld, and the finish's request; the link is the rest of the step
    // (the client's start, and the link's request).
    const t = Object.fromEntries(
      readFileSync(times, 'utf8')
        .trim()
        .split('\n')
        .map((l) => [l.split(' ')[0], Number(l.split(' ')[1]) / 1000]),
    );
    ms.ld = t.ld;
    ms.finish = t.finish;
    ms.link = ms.step - t.ld - t.finish;
  }
  return {
    link: ms.link ?? 0,
    ld: ms.ld,
    finish: ms.finish ?? 0,
    // What the image rule's strip adds to strip alone.
    compact: ms.rule !== undefined ? Math.max(0, ms.rule - ms.strip) : (ms.compact ?? 0),
  };
}

/**
 * `app`'s objects with its own µlib's code replaced by `other`'s (same name, same µlibs): what a
 * relink sees when only the app changed. The copy goes to `dir`, over the previous one: make
 * rebuilds the app's object where it was, and relinks with the same command lines.
 */
export function appChanged(
  app: AppSpec,
  objects: string[],
  otherObjects: string[],
  other: AppSpec,
  dir: string,
): string[] {
  const own = objectBasename(app.appLib);
  const i = objects.findIndex((p) => basename(p) === own);
  const j = otherObjects.findIndex((p) => basename(p) === objectBasename(other.appLib));
  if (i < 0 || j < 0) throw new Error(`bench: ${app.name}: no app object among its objects`);
  mkdirSync(dir, { recursive: true });
  const copy = join(dir, own);
  copyFileSync(otherObjects[j], copy);
  return objects.map((p, k) => (k === i ? copy : p));
}

/** Fills result.link_step: per layout, medians over a few FaaS apps. */
export async function linkStep(
  run: BenchRun,
  w: Workload,
  plans: LayoutPlan[],
  result: BenchResult,
): Promise<void> {
  const t = Date.now();
  const n = Math.min(w.faas.length, run.quick ? 2 : 5);
  const apps = w.faas.slice(0, n);
  const base = join(run.work, 'link-step');
  rmSync(base, { recursive: true, force: true });
  const runDir = join(base, 'run');
  await startServer(runDir);
  // A server that has linked before, as a user's is after the first links of a session (its
  // modules loaded, its code compiled by the JIT): per layout, one link step and three relinks,
  // each with other app code, not counted.
  for (const q of plans.filter((x) => x.map)) {
    const compiled = q.dce ? w.compiled.dce : w.compiled.normal;
    const app = w.faas[0];
    const dir = join(base, 'warm-up', q.layout);
    const map = join(dir, 'map.json');
    mkdirSync(dir, { recursive: true });
    copyMap(q.map!, map);
    const objects = objectsFor(app, compiled);
    const o = { image: app.name, dir, map, aslr: q.layout === 'spacer-aslr', runDir };
    await linkStepOnce({ ...o, objects, cache: join(dir, 'cache') });
    for (let k = 1; k <= 3; k++) {
      const other = w.faas[k % w.faas.length];
      const o2 = objectsFor(other, compiled);
      const changed = appChanged(app, objects, o2, other, join(dir, 'app'));
      await linkStepOnce({ ...o, objects: changed, cache: join(dir, 'cache') });
    }
  }
  const p = new Progress('link step (CLI processes)', n * plans.length, run.log);
  const fig: BenchResult['link_step'] = {};
  for (const q of plans) {
    const compiled = q.dce ? w.compiled.dce : w.compiled.normal;
    const extraArgs = q.dce ? ['-Wl,--gc-sections'] : undefined;
    const cold: StepTimes[] = [],
      warm: StepTimes[] = [],
      warmDirect: StepTimes[] = [],
      fresh: StepTimes[] = [];
    for (const [k, app] of apps.entries()) {
      const objects = objectsFor(app, compiled);
      const dir = join(base, q.layout, app.name);
      let map: string | undefined;
      if (q.map) {
        // The workspace's map without this image: its first link, as on a fresh build folder.
        map = join(dir, 'map.json');
        mkdirSync(dir, { recursive: true });
        copyMap(q.map, map);
        await mapGc(map, [app.name]);
      }
      const aslr = q.layout === 'spacer-aslr';
      const own = join(dir, 'cache');
      rmSync(own, { recursive: true, force: true });
      const step = (objs: string[], cache?: string, server = true) =>
        linkStepOnce({
          ...{ image: app.name, objects: objs, dir, map, aslr, extraArgs, cache },
          ...{ runDir, server },
        });
      // The app's object where make builds it: every link of this image has one command line.
      const built = (other: AppSpec) =>
        appChanged(app, objects, objectsFor(other, compiled), other, join(dir, 'app'));
      cold.push(await step(built(app), q.map ? own : undefined));
      // Three relinks, each after the app changed (to another app's code).
      for (let r = 0; r < 3; r++)
        warm.push(await step(built(w.faas[(k + 1 + r) % w.faas.length]), q.map ? own : undefined));
      // The same relink again (the app changed back) with Node started for each command.
      if (q.map) warmDirect.push(await step(built(app), own, false));
      // A new image of a workspace whose cache holds its other images' analyses.
      if (q.map) {
        copyMap(q.map, map!);
        await mapGc(map!, [app.name]);
        fresh.push(await step(built(app), cacheDirFor(q.map)));
      }
      p.tick();
    }
    fig[q.layout] = stepFigures(cold, warm, fresh, !!q.map, warmDirect);
  }
  result.link_step = fig;
  const via = helperRunner(runDir).viaClient ? ' through the link server (spacer-client)' : '';
  result.link_step_entry = `${spacerCommand().entry}${via}`;
  lap(run.durations, 'link_step', t);
}

function stepFigures(
  cold: StepTimes[],
  warm: StepTimes[],
  fresh: StepTimes[],
  helper: boolean,
  warmDirect: StepTimes[] = [],
): LinkStepFigures {
  const h = (x: StepTimes) => x.link + x.finish + x.compact;
  const ld = median([...cold, ...warm].map((x) => x.ld));
  const hw = median(warm.map(h));
  return {
    samples: cold.length,
    ld_ms: r1(ld),
    helper_cold_ms: helper ? r1(median(cold.map(h))) : null,
    helper_new_ms: helper && fresh.length ? r1(median(fresh.map(h))) : null,
    helper_warm_ms: helper ? r1(hw) : null,
    helper_warm_direct_ms: helper && warmDirect.length ? r1(median(warmDirect.map(h))) : null,
    warm: helper
      ? {
          link_ms: r1(median(warm.map((x) => x.link))),
          finish_ms: r1(median(warm.map((x) => x.finish))),
          compact_ms: r1(median(warm.map((x) => x.compact))),
        }
      : null,
    warm_over_ld: helper ? r3(hw / ld) : null,
    warm_helper_share: helper ? r3(hw / (hw + ld)) : null,
  };
}

/** bench.md: the link step per layout and the map-size scaling. */
export function linkStepTables(r: BenchResult, out: string[]): void {
  const L = r.link_step;
  if (!L) return;
  out.push(
    `#### Link step as make runs it (CLI processes: ${r.link_step_entry ?? '?'}; medians)`,
    '',
    '| layout | samples | ld (ms) | helper cold (ms) | helper, new image (ms) | helper warm (ms) | warm: link + finish + compact (ms) | warm / ld | warm, Node per command (ms) |',
    '|---|---|---|---|---|---|---|---|---|',
  );
  const f1 = (x: number | null) => (x === null ? '-' : x.toFixed(1));
  for (const [l, f] of Object.entries(L)) {
    const w = f.warm;
    out.push(
      `| ${l} | ${f.samples} | ${f1(f.ld_ms)} | ${f1(f.helper_cold_ms)} | ${f1(f.helper_new_ms)} | ${f1(f.helper_warm_ms)} | ` +
        `${w ? `${f1(w.link_ms)} + ${f1(w.finish_ms)} + ${f1(w.compact_ms)}` : '-'} | ${f.warm_over_ld ?? '-'} | ` +
        `${f1(f.helper_warm_direct_ms ?? null)} |`,
    );
  }
  out.push(
    '',
    'cold: the image new to the workspace map, its analysis cache empty; new image: the same with ' +
      "the workspace's cache (its other images' analyses); warm: relinked after only its app µlib " +
      'changed (three relinks per app, each to other app code, its object rebuilt in place as make ' +
      'does, so every link of an image has one command line; the server has served a link and ' +
      'three relinks per layout before the first sample). compact: what the image rule adds to strip (`spacer compact`, served; with Node ' +
      'per command, taking the file `spacer finish --precompact` left). Each command is timed in ' +
      'one bash process per link step, as make runs them (not forked from the bench). ' +
      'Node per command: a warm relink with ' +
      'SPACER_SERVER=off (a Node process per helper command, no link server), the app changed ' +
      'back to the version the cold link decoded (so nothing is decoded: it favours Node).',
    '',
  );
  const S = r.map_scaling;
  if (!S) return;
  out.push(
    '#### Map size: one relink (spacer link + finish) against a map of N images',
    '',
    '| images | map bytes | helper (ms) | vs the smallest map |',
    '|---|---|---|---|',
  );
  const first = Object.values(S)[0]?.helper_ms;
  for (const [n, s] of Object.entries(S))
    out.push(
      `| ${n} | ${s.map_bytes.toLocaleString('en-US').replace(/,/g, ' ')} | ${s.helper_ms.toFixed(1)} | ${first ? `${((100 * s.helper_ms) / first).toFixed(0)} %` : '-'} |`,
    );
  out.push('');
}
