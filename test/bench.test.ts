// The benchmark, small: 30 generated FaaS apps, 4 guests per layout. Checks bench.json has the
// figures, the plot is SVG with one series per supported layout, the model agrees with real KSM
// (when root; this CAN fail, and then it is a finding), and every KSM setting is as it was.
import test from 'ava';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BENCH_LAYOUTS, runBench, type BenchResult } from '../helper/bench/index.js';
import { generateApp } from '../helper/bench/generate.js';
import { ksmUnavailable, readKsmSettings } from '../helper/bench/ksm.js';
import { tempDir } from './_fixtures.js';

const out = tempDir('bench');
const ksmWhy = ksmUnavailable();
let before: Record<string, string> | null = null;
let after: Record<string, string> | null = null;
let r: BenchResult;

test.before(async () => {
  if (!ksmWhy) before = readKsmSettings();
  r = await runBench({
    apps: 30,
    guests: 4,
    quick: true,
    out,
    work: join(out, 'work'),
    log: () => {},
  });
  if (!ksmWhy) after = readKsmSettings();
});

test('the workload is deterministic in the seed; FaaS apps share their µlibs and differ in their code', (t) => {
  t.is(generateApp(7, 3).source, generateApp(7, 3).source);
  t.not(generateApp(7, 3).source, generateApp(8, 3).source);
  const apps = Array.from({ length: 30 }, (_, i) => generateApp(1, i));
  t.is(new Set(apps.map((a) => a.libs.join(','))).size, 1, 'one µlib set');
  t.is(new Set(apps.map((a) => a.source)).size, 30, 'thirty different app codes');
  const sizes = apps.flatMap((a) => a.functionSizes);
  t.true(Math.max(...sizes) > 4 * Math.min(...sizes), 'functions of varied size');
});

test('bench.json has the figures of every supported layout and the curves', (t) => {
  const j = JSON.parse(readFileSync(join(out, 'bench.json'), 'utf8')) as BenchResult;
  t.true(
    j.layouts_supported.includes('default') &&
      j.layouts_supported.includes('dce') &&
      j.layouts_supported.includes('spacer'),
  );
  for (const l of BENCH_LAYOUTS)
    t.true(
      j.layouts_supported.includes(l) !== l in j.layouts_skipped,
      `${l}: supported or skipped with a reason`,
    );
  for (const l of j.layouts_supported) {
    const f = j.layouts[l]!;
    t.is(f.instances, 30, l);
    for (const k of ['pages', 'distinct_pages', 'content_bound_pages', 'elf_bytes'] as const)
      t.true(Number.isInteger(f[k]) && f[k]! > 0, `${l}.${k}`);
    // L counts the platform's per-app variants once each; a Spacer layout keeps them at one
    // address and shares the pages where they agree (docs/metrics.md): it may go under L.
    if (!l.startsWith('spacer'))
      t.true(f.distinct_pages >= f.content_bound_pages!, `${l}: keeps at least the content bound`);
    const c = j.curves[l]!;
    t.deepEqual(
      c.map((p) => p.instances),
      [1, 2, 5, 10, 20, 30],
    );
    t.is(c.at(-1)!.distinct_pages, f.distinct_pages);
    for (let i = 1; i < c.length; i++)
      t.true(c[i].distinct_pages >= c[i - 1].distinct_pages, `${l}: D grows with instances`);
    if (j.ksm.ran) {
      const k = f.ksm!;
      for (const x of ['pages_shared', 'pages_sharing', 'pages_unshared', 'zero_pages'] as const)
        t.true(Number.isInteger(k[x]), `${l}.ksm.${x}`);
      t.is(typeof k.model_agrees, 'boolean');
    }
  }
  t.true(j.targets.length >= 6);
  for (const x of j.targets) t.true(['PASS', 'FAIL', 'SKIP'].includes(x.status), x.id);
  t.true(j.overheads.link.spacer!.link_step_ms > 0);
  // The link step as make runs it (#14): ld per layout, the helper's cold and warm times, and one
  // relink against maps of 100, 1 000 and 10 000 images.
  for (const l of j.layouts_supported) t.true(j.link_step![l]!.ld_ms > 0, `${l}: ld_ms`);
  t.true(j.link_step!.spacer!.helper_cold_ms! > 0 && j.link_step!.spacer!.helper_warm_ms! > 0);
  t.true(j.link_step!.spacer!.helper_new_ms! > 0, 'a new image with the workspace cache');
  t.true(
    j.link_step!.spacer!.warm_helper_share! > 0 && j.link_step!.spacer!.warm_helper_share! < 1,
  );
  for (const id of ['warm_relink_spacer', 'warm_share_spacer', 'map_scaling'])
    t.truthy(
      j.targets.find((x) => x.id === id),
      id,
    );
  t.is(j.link_step!.default!.helper_warm_ms, null);
  t.deepEqual(Object.keys(j.map_scaling!), ['100', '1000', '10000']);
  for (const [n, s] of Object.entries(j.map_scaling!)) {
    t.is(s.images, Number(n));
    t.true(s.helper_ms > 0);
  }
  t.truthy(j.overheads.runtime);
  t.true(j.overheads.runtime!.all_ok, 'cpu-bench printed the same output in every layout');
  const md = readFileSync(join(out, 'bench.md'), 'utf8');
  t.regex(md, /\| layout \| instances \|/);
  t.regex(
    md,
    /\| layout \| samples \| ld \(ms\) \| helper cold \(ms\) \| helper, new image \(ms\) \|/,
  );
  t.regex(md, /^\| 10000 \| /m);
  t.regex(md, /(PASS|FAIL)/);
});

test('merging only read-only segments keeps more distinct pages than merging all, at most every non-zero page', (t) => {
  const j = JSON.parse(readFileSync(join(out, 'bench.json'), 'utf8')) as BenchResult;
  for (const l of j.layouts_supported) {
    const all = j.layouts[l]!,
      ro = j.mergeable_ro_only![l]!;
    // Fewer pages may merge, so D can only grow; the writable pages count once per instance.
    t.true(ro.distinct_pages >= all.distinct_pages, `${l}: ro-only D ${ro.distinct_pages}`);
    t.true(ro.distinct_pages <= all.nonzero_pages, `${l}: ro-only D within the non-zero pages`);
    t.true(ro.writable_nonzero_pages >= 30, `${l}: every image has a non-zero writable page`);
    t.true(ro.distinct_pages - ro.writable_nonzero_pages <= all.distinct_pages, l);
    if (j.ksm.ran) t.true(ro.ksm!.model_agrees, `${l}: real KSM with loader --ro-only agrees`);
  }
  const md = readFileSync(join(out, 'bench.md'), 'utf8');
  t.regex(md, /\| read-only only: D \|/);
});

test('ASLR hardening costs no distinct page: D with the salts zeroed is within 1 % of D', (t) => {
  const j = JSON.parse(readFileSync(join(out, 'bench.json'), 'utf8')) as BenchResult;
  t.true(j.layouts_supported.includes('spacer-aslr'), 'the bench builds the ASLR layout');
  const h = j.hardening!['spacer-aslr']!;
  t.true(h.seed_dependent_pages > 0, 'ASLR images have seed-dependent pages, each salted');
  t.is(h.distinct_pages, j.layouts['spacer-aslr']!.distinct_pages);
  const diff = Math.abs(h.distinct_pages - h.distinct_pages_unsalted);
  t.true(
    diff <= Math.ceil(h.distinct_pages_unsalted / 100),
    `D ${h.distinct_pages} vs ${h.distinct_pages_unsalted}`,
  );
  t.regex(readFileSync(join(out, 'bench.md'), 'utf8'), /\| D with the salts zeroed \|/);
});

test('the plot is SVG with one series per supported layout', (t) => {
  const svg = readFileSync(join(out, 'bench.svg'), 'utf8');
  t.regex(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"[^>]*>/);
  t.true(svg.trimEnd().endsWith('</svg>'));
  // Well-formed enough: every opened element is closed.
  const opens = (svg.match(/<(g|svg|text)\b/g) ?? []).length,
    closes = (svg.match(/<\/(g|svg|text)>/g) ?? []).length;
  t.is(opens, closes);
  t.is((svg.match(/class="series"/g) ?? []).length, r.layouts_supported.length);
  t.regex(svg, /instances/);
  t.regex(svg, /MiB/);
});

// Skipped, with the reason in the title, where this machine has no usable KSM.
const ksmTest = ksmWhy ? test.skip : test;
const ksmTitle = (title: string) => (ksmWhy ? `${title} (skipped: ${ksmWhy})` : title);

test('without KSM the bench says it did not run it', (t) => {
  t.is(r.ksm.ran, !ksmWhy, ksmWhy ?? 'KSM available');
});

ksmTest(ksmTitle('real KSM agrees with the page model (loaders, one per instance)'), (t) => {
  t.true(r.ksm.ran);
  for (const l of r.layouts_supported) {
    const k = r.layouts[l]!.ksm!;
    t.true(k.converged, `${l}: KSM converged`);
    t.true(
      k.model_agrees,
      `${l}: shared ${k.pages_shared} + unshared ${k.pages_unshared} vs model ${k.model_expected_kept} (${k.deviation_pct} %)`,
    );
    t.is(k.zero_pages, r.layouts[l]!.zero_pages, `${l}: zero pages`);
    const g = r.layouts[l]!.guests!;
    t.is(g.alive, 4, `${l}: every guest stayed alive (${g.error ?? ''})`);
  }
});

ksmTest(ksmTitle('every KSM setting is restored after the run'), (t) => {
  t.deepEqual(after, before);
  t.true(r.ksm.settings_restored);
  t.true(existsSync(join(out, 'bench.json')));
});
