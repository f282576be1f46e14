// The report: bench.json, the plot (bench.svg, hand-written SVG) and the Markdown tables
// (bench.md, also what `npm run bench` prints).
import { join, relative } from 'node:path';
import { writeFileAtomic } from '../util/files.js';
import { linkStepTables } from './linkstep.js';
import { fmtDur } from './progress.js';
import { plotSvg } from './svg.js';
import type { BenchLayout, BenchResult } from './types.js';

const COLORS: Record<BenchLayout, string> = {
  default: '#d62728',
  dce: '#ff7f0e',
  spacer: '#1f77b4',
  'spacer-aslr': '#2ca02c',
};

export function plot(r: BenchResult): string {
  const series = r.layouts_supported.map((l) => ({
    name:
      l === 'dce'
        ? 'DCE'
        : l === 'default'
          ? 'default'
          : l === 'spacer'
            ? 'Spacer'
            : 'Spacer (ASLR)',
    color: COLORS[l],
    dash: l === 'dce' ? '6 4' : l === 'spacer-aslr' ? '2 3' : undefined,
    points: (r.curves[l] ?? []).map((p) => ({ x: p.instances, y: p.memory_mib })),
  }));
  const skipped = Object.keys(r.layouts_skipped);
  return plotSvg(series, {
    title: `Memory after deduplication: ${r.options.apps} FaaS unikernels`,
    xLabel: 'instances (different FaaS apps, log scale)',
    yLabel: 'distinct non-zero pages × 4 KiB (MiB)',
    note:
      `page model of docs/metrics.md (what KSM with use_zero_pages=1 keeps), seed ${r.options.seed}` +
      (skipped.length ? `; not yet supported: ${skipped.join(', ')}` : ''),
  });
}

const num = (n: number | null | undefined) =>
  n === null || n === undefined ? '-' : n.toLocaleString('en-US').replace(/,/g, ' ');

export function formatBenchMarkdown(r: BenchResult): string {
  const out: string[] = [];
  for (const section of [
    layoutTable,
    roOnlyTable,
    hardeningTable,
    curveTable,
    guestTable,
    linkOverheads,
    linkStepTables,
    runtimeLine,
    targetsAndMachine,
  ])
    section(r, out);
  return out.join('\n');
}

/** The title and the figures at N per layout (with real KSM when it ran). */
function layoutTable(r: BenchResult, out: string[]): void {
  const L = r.layouts_supported;
  out.push(
    `### Benchmark: ${r.options.apps} generated FaaS unikernels (seed ${r.options.seed}), ${L.length} layouts`,
    '',
  );
  out.push(
    '| layout | instances | pages P | distinct D | memory (MiB) | bound L | D/L | ELF bytes | KSM shared + unshared | KSM sharing | KSM zero | model agrees |',
  );
  out.push('|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const l of L) {
    const f = r.layouts[l]!;
    const k = f.ksm;
    out.push(
      `| ${l} | ${f.instances} | ${num(f.pages)} | ${num(f.distinct_pages)} | ${f.memory_mib.toFixed(2)} | ${num(f.content_bound_pages)} | ${f.d_over_l?.toFixed(2) ?? '-'} | ${num(f.elf_bytes)} | ` +
        (k
          ? `${num(k.pages_shared + k.pages_unshared)} (model ${num(k.model_expected_kept)}) | ${num(k.pages_sharing)} | ${num(k.zero_pages)} | ${k.model_agrees ? 'yes' : 'NO'} (${k.deviation_pct} %) |`
          : '- | - | - | - |'),
    );
  }
  for (const [l, why] of Object.entries(r.layouts_skipped))
    out.push(`| ${l} | skipped: ${why} | | | | | | | | | | |`);
  out.push('');
}

/** D when the loader marks only read-only segments mergeable, beside D with every page. */
function roOnlyTable(r: BenchResult, out: string[]): void {
  const ro = r.mergeable_ro_only;
  if (!ro) return;
  const L = r.layouts_supported.filter((l) => ro[l]);
  out.push(
    `Mergeable: every page (all) or read-only segments only (code and read-only data; writable pages kept per instance), ${r.options.apps} instances:`,
    '',
  );
  out.push(`| mergeable | ${L.join(' | ')} |`, `|---|${L.map(() => '---').join('|')}|`);
  out.push(`| all: D | ${L.map((l) => num(r.layouts[l]!.distinct_pages)).join(' | ')} |`);
  out.push(`| read-only only: D | ${L.map((l) => num(ro[l]!.distinct_pages)).join(' | ')} |`);
  out.push(
    `| of which writable pages | ${L.map((l) => num(ro[l]!.writable_nonzero_pages)).join(' | ')} |`,
    '',
  );
}

/** D of the ASLR images with their hardening salts and without (the salt words zeroed). */
function hardeningTable(r: BenchResult, out: string[]): void {
  const h = r.hardening;
  if (!h) return;
  const L = r.layouts_supported.filter((l) => h[l]);
  out.push(
    `ASLR hardening (every seed-dependent page salted), ${r.options.apps} instances, same images:`,
    '',
    '| layout | D hardened | D with the salts zeroed | seed-dependent pages |',
    '|---|---|---|---|',
    ...L.map(
      (l) =>
        `| ${l} | ${num(h[l]!.distinct_pages)} | ${num(h[l]!.distinct_pages_unsalted)} | ` +
        `${num(h[l]!.seed_dependent_pages)} |`,
    ),
    '',
  );
}

/** D against instances: the curves. */
function curveTable(r: BenchResult, out: string[]): void {
  const L = r.layouts_supported;
  out.push('Distinct pages D against instances (the first k FaaS apps, one instance each):', '');
  out.push(`| instances | ${L.map((l) => `${l} D (MiB)`).join(' | ')} | bound L |`);
  out.push(`|---|${L.map(() => '---').join('|')}|---|`);
  const ks = r.curves[L[0]]!.map((p) => p.instances);
  ks.forEach((k, i) => {
    out.push(
      `| ${k} | ${L.map((l) => {
        const p = r.curves[l]![i];
        return `${num(p.distinct_pages)} (${p.memory_mib.toFixed(2)})`;
      }).join(' | ')} | ${num(r.curves[L[0]]![i].content_bound_pages)} |`,
    );
  });
}

/** qemu guests under KSM, or why KSM did not run. */
function guestTable(r: BenchResult, out: string[]): void {
  const L = r.layouts_supported;
  if (r.ksm.ran && L.some((l) => r.layouts[l]!.guests)) {
    out.push(
      '',
      `qemu guests under KSM (first ${r.options.guests} FaaS apps per layout, \`-append stay\`, THP off for qemu):`,
      '',
    );
    out.push(
      '| layout | guests alive | pages_shared | pages_sharing | pages_unshared | ksm_zero_pages | kept (MiB) | model D of the images |',
    );
    out.push('|---|---|---|---|---|---|---|---|');
    for (const l of L) {
      const g = r.layouts[l]!.guests;
      if (!g) continue;
      out.push(
        `| ${l} | ${g.alive}/${g.guests} | ${num(g.pages_shared)} | ${num(g.pages_sharing)} | ${num(g.pages_unshared)} | ${num(g.zero_pages)} | ${g.memory_mib.toFixed(2)} | ${num(g.model_distinct_pages)}${g.error ? ` (error: ${g.error})` : ''} |`,
      );
    }
  } else if (!r.ksm.ran) out.push('', `Real KSM not run: ${r.ksm.reason}.`);
}

/** The link-step table, the link ratio and the rewrite figures. */
function linkOverheads(r: BenchResult, out: string[]): void {
  const L = r.layouts_supported;
  out.push('', 'Overheads (medians of one run; link figures per image, side by side):', '');
  out.push(
    '| layout | helper plan (ms) | ld (ms) | finish incl. rewrite (ms) | rewrite (ms) | link step (ms) | helper share |',
  );
  out.push('|---|---|---|---|---|---|---|');
  for (const l of L) {
    const t = r.overheads.link[l];
    if (t)
      out.push(
        `| ${l} | ${t.plan_ms} | ${t.link_ms} | ${t.finish_ms} | ${t.rewrite_ms ?? '-'} | ${t.link_step_ms} | ${(t.helper_share * 100).toFixed(1)} % |`,
      );
  }
  out.push('');
  if (r.overheads.link_ratio_spacer !== null)
    out.push(
      `- Link step with the helper over without (spacer / default): **${r.overheads.link_ratio_spacer}×**` +
        (r.overheads.link_ratio_spacer_aslr !== null
          ? `; spacer-aslr / default: ${r.overheads.link_ratio_spacer_aslr}×`
          : ''),
    );
  if (r.overheads.rewrite.available) {
    for (const [l, x] of Object.entries(r.overheads.rewrite.layouts)) {
      out.push(
        `- Rewrite, ${l} (medians over ${x.images} images): ${x.ms_median} ms, ${x.sites_median} sites, ${x.trampolines_median} instructions moved, ${num(x.table_bytes_median)} indirection-table bytes (${num(x.table_bytes_total)} in all), ${x.data_pointers_median} data pointers left`,
      );
    }
  } else out.push(`- Rewrite: ${r.overheads.rewrite.note}`);
}

/** The runtime line (cpu-bench's loop). */
function runtimeLine(r: BenchResult, out: string[]): void {
  const rt = r.overheads.runtime;
  if (rt)
    out.push(
      `- Runtime, ${rt.app}'s SHA-256 loop (${rt.rounds} boots per layout, alternated, ${rt.accel.toUpperCase()}), fastest run: ` +
        Object.entries(rt.ms_min)
          .map(([l, v]) => `${l} ${v} ms`)
          .join(', ') +
        '; ratio ' +
        Object.entries(rt.ratio)
          .map(([l, v]) => `${l}/default **${v}**`)
          .join(', ') +
        '. Medians: ' +
        Object.entries(rt.ms_median)
          .map(([l, v]) => `${l} ${v} ms`)
          .join(', ') +
        ' (ratio ' +
        Object.entries(rt.ratio_median)
          .map(([l, v]) => `${l} ${v}`)
          .join(', ') +
        ')' +
        (rt.all_ok ? '' : ' (**an output differed or a boot failed**)') +
        (rt.retried?.length ? `; booted again after a failure: ${rt.retried.join('; ')}` : ''),
    );
}

/** The targets, the plot and the machine with the durations. */
function targetsAndMachine(r: BenchResult, out: string[]): void {
  out.push('', 'Targets of the issue:', '');
  out.push('| target | value | result |', '|---|---|---|');
  for (const x of r.targets)
    out.push(`| ${x.what} | ${x.value} | **${x.status}**${x.note ? ` (${x.note})` : ''} |`);
  out.push('', `![memory against instances](bench.svg)`, '');
  out.push(
    `Run on ${r.machine.cpus} CPUs, Linux ${r.machine.kernel}; durations: ${Object.entries(
      r.durations_ms,
    )
      .map(([k, v]) => `${k} ${fmtDur(v)}`)
      .join(', ')}.`,
    '',
  );
}

/** What `npm run bench` prints on stdout: the Markdown figures (targets included). */
export function formatBench(r: BenchResult): string {
  return (
    formatBenchMarkdown(r) +
    `\nFigures: ${join(r.out, 'bench.json')}, ${join(r.out, 'bench.md')}, plot ${join(r.out, 'bench.svg')}\n`
  );
}

/** Writes bench.json, bench.svg and bench.md into `out` and logs where they are. */
export function writeReport(result: BenchResult, log: (line: string) => void): void {
  const { out } = result;
  writeFileAtomic(join(out, 'bench.json'), JSON.stringify(result, null, 2) + '\n');
  writeFileAtomic(join(out, 'bench.svg'), plot(result));
  writeFileAtomic(join(out, 'bench.md'), formatBenchMarkdown(result));
  log(
    `bench: done in ${fmtDur(result.durations_ms.total)}; figures in ${relative(process.cwd(), out) || '.'}/bench.{json,md,svg}`,
  );
}
