// The issue's targets, computed from the figures, never assumed: each PASS, FAIL or SKIP (with the
// reason).
import type { BenchResult, Target } from './types.js';

export function targets(r: BenchResult): Target[] {
  return [...memoryTargets(r), ...costTargets(r), ksmTarget(r)];
}

/** Distinct pages: Spacer against DCE and the default, ASLR against Spacer. */
function memoryTargets(r: BenchResult): Target[] {
  const out: Target[] = [];
  const lay = r.layouts;
  const N = r.options.apps;
  const at = N === 1000 ? 'at N=1000' : `at N=${N} (the issue sets N=1000)`;
  if (lay.spacer && lay.dce) {
    const ratio = lay.spacer.distinct_pages / lay.dce.distinct_pages;
    out.push({
      id: 'spacer_vs_dce',
      what: `Spacer distinct pages ≤ 1/3 of DCE's ${at}`,
      value: `${lay.spacer.distinct_pages} / ${lay.dce.distinct_pages} = ${ratio.toFixed(3)}`,
      status: ratio <= 1 / 3 ? 'PASS' : 'FAIL',
    });
  }
  // #13: each image keeps only its own pages.
  if (lay.spacer?.page_floor_pages) {
    const f = lay.spacer.distinct_pages / lay.spacer.page_floor_pages;
    out.push({
      id: 'spacer_vs_floor',
      what: `Spacer distinct pages ≤ 1.10 × the page floor L_pg ${at}`,
      value: `${lay.spacer.distinct_pages} / ${lay.spacer.page_floor_pages} = ${f.toFixed(3)}`,
      status: f <= 1.1 ? 'PASS' : 'FAIL',
    });
  }
  if (lay['spacer-aslr'] && lay.spacer) {
    const f = lay['spacer-aslr'].distinct_pages / lay.spacer.distinct_pages;
    out.push({
      id: 'aslr_vs_spacer_own',
      what: `Spacer-ASLR distinct pages ≤ 1.10 × Spacer's ${at}`,
      value: `${lay['spacer-aslr'].distinct_pages} / ${lay.spacer.distinct_pages} = ${f.toFixed(3)}`,
      status: f <= 1.1 ? 'PASS' : 'FAIL',
    });
  }
  if (lay['spacer-aslr'] && lay.spacer) {
    const d = lay['spacer-aslr'].distinct_pages / lay.spacer.distinct_pages - 1;
    out.push({
      id: 'aslr_vs_spacer',
      what: `Spacer-ASLR distinct pages within 15 % of Spacer ${at}`,
      value: `${(d * 100).toFixed(1)} %`,
      status: Math.abs(d) <= 0.15 ? 'PASS' : 'FAIL',
    });
  } else
    out.push({
      id: 'aslr_vs_spacer',
      what: 'Spacer-ASLR distinct pages within 15 % of Spacer',
      value: '-',
      status: 'SKIP',
      note: r.layouts_skipped['spacer-aslr'],
    });
  if (r.curves.spacer && r.curves.default) {
    const bad = r.curves.spacer.filter(
      (p, i) => p.instances >= 2 && p.distinct_pages > r.curves.default![i].distinct_pages,
    );
    out.push({
      id: 'spacer_never_above_default',
      what: 'Spacer never above default (distinct pages) at any instance count ≥ 2',
      value: bad.length
        ? `above at ${bad.map((p) => p.instances).join(', ')}`
        : `below or equal at all ${r.curves.spacer.filter((p) => p.instances >= 2).length} counts`,
      status: bad.length ? 'FAIL' : 'PASS',
    });
  }
  return out;
}

/** What Spacer costs: ELF size, runtime, helper time. */
function costTargets(r: BenchResult): Target[] {
  const out: Target[] = [];
  const lay = r.layouts;
  if (lay.spacer && lay.default) {
    const d = lay.spacer.elf_bytes / lay.default.elf_bytes - 1;
    // Spacer writes its images packed (the padding is in memory, not in the file); the default is
    // the file ld writes. The same packing of the default images is shown next to it.
    const packed = lay.default.elf_bytes_packed;
    const dp = packed ? lay.spacer.elf_bytes / packed - 1 : undefined;
    out.push({
      id: 'elf_size',
      what: 'ELF file size Spacer ≤ 2 % above default',
      value: `${(d * 100).toFixed(1)} % (${lay.spacer.elf_bytes} vs ${lay.default.elf_bytes} bytes)${dp !== undefined ? `; the default packed the same way: ${packed} bytes, Spacer ${dp >= 0 ? '+' : ''}${(dp * 100).toFixed(1)} %` : ''}`,
      status: d <= 0.02 ? 'PASS' : 'FAIL',
    });
  }
  const rt = r.overheads.runtime;
  if (rt?.ratio['spacer-aslr'] !== undefined) {
    const d = rt.ratio['spacer-aslr']! - 1;
    const dm = (rt.ratio_median['spacer-aslr'] ?? NaN) - 1;
    out.push({
      id: 'runtime_aslr',
      what: 'runtime overhead of Spacer-ASLR < 2 % (cpu-bench loop, TCG, fastest runs)',
      value: `${(d * 100).toFixed(1)} % (medians: ${(dm * 100).toFixed(1)} %)`,
      status: d < 0.02 && rt.all_ok ? 'PASS' : 'FAIL',
    });
  } else {
    out.push({
      id: 'runtime_aslr',
      what: 'runtime overhead of Spacer-ASLR < 2 %',
      value:
        rt?.ratio.spacer !== undefined
          ? `(Spacer: ${((rt.ratio.spacer! - 1) * 100).toFixed(1)} %)`
          : '-',
      status: 'SKIP',
      note: r.layouts_skipped['spacer-aslr'] ?? 'no runtime figures',
    });
  }
  const lk = r.overheads.link['spacer-aslr'] ?? r.overheads.link.spacer;
  if (lk) {
    const which = r.overheads.link['spacer-aslr'] ? 'spacer-aslr' : 'spacer';
    out.push({
      id: 'helper_time',
      what: `helper time < 10 % of the link step (${which})`,
      value: `${(lk.helper_share * 100).toFixed(1)} % (${lk.helper_ms} of ${lk.link_step_ms} ms)`,
      status: lk.helper_share < 0.1 ? 'PASS' : 'FAIL',
    });
  }
  out.push(...linkStepTargets(r));
  return out;
}

/** Issue #14: the warm relink against ld, the helper's share, the map's size. */
function linkStepTargets(r: BenchResult): Target[] {
  const out: Target[] = [];
  for (const l of ['spacer', 'spacer-aslr'] as const) {
    const f = r.link_step?.[l];
    if (!f || f.warm_over_ld === null || f.warm_helper_share === null) continue;
    out.push({
      id: `warm_relink_${l}`,
      what: `warm relink (only the app changed): helper ≤ 1× ld (${l}, CLI processes)`,
      value: `${f.helper_warm_ms} vs ${f.ld_ms} ms = ${f.warm_over_ld}×`,
      status: f.warm_over_ld <= 1 ? 'PASS' : 'FAIL',
    });
    out.push({
      id: `warm_share_${l}`,
      what: `helper's share of the warm link step < 50 % (${l})`,
      value: `${(f.warm_helper_share * 100).toFixed(1)} %`,
      status: f.warm_helper_share < 0.5 ? 'PASS' : 'FAIL',
    });
  }
  const S = r.map_scaling;
  const small = S && Object.values(S)[0],
    big = S?.['10000'];
  if (small && big)
    out.push({
      id: 'map_scaling',
      what: 'one relink with 10 000 images in the map within 10 % of one with the smallest map',
      value: `${big.helper_ms} vs ${small.helper_ms} ms (${((100 * big.helper_ms) / small.helper_ms - 100).toFixed(0)} %)`,
      status: big.helper_ms <= 1.1 * small.helper_ms ? 'PASS' : 'FAIL',
    });
  return out;
}

/** Real KSM against the page model, or SKIP with the reason KSM did not run. */
function ksmTarget(r: BenchResult): Target {
  const lay = r.layouts;
  if (r.ksm.ran) {
    const ks = Object.entries(lay)
      .filter(([, f]) => f?.ksm)
      .map(([l, f]) => `${l} ${f!.ksm!.deviation_pct} %`);
    const all = Object.values(lay).every((f) => !f || f.ksm?.model_agrees);
    return {
      id: 'ksm_model',
      what: 'KSM and the model agree within 1 % (loaders)',
      value: ks.join(', '),
      status: all ? 'PASS' : 'FAIL',
    };
  } else
    return {
      id: 'ksm_model',
      what: 'KSM and the model agree within 1 %',
      value: '-',
      status: 'SKIP',
      note: r.ksm.reason,
    };
}
