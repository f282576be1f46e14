// The benchmark's vocabulary: its layouts, options and the figures bench.json holds
// (bench/README.md, 'The figures').

/**
 * Every layout the benchmark knows, in plot order. Layouts buildImage does not support yet are
 * skipped (and said so).
 */
export const BENCH_LAYOUTS = ['default', 'dce', 'spacer', 'spacer-aslr'] as const;
export type BenchLayout = (typeof BENCH_LAYOUTS)[number];
/** Instance counts of the curves (those ≤ N, and N). */
export const CHECKPOINTS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000];
/** DCE as Unikraft's CONFIG_OPTIMIZE_DEADELIM: per-function/data sections, then --gc-sections. */
export const DCE_CFLAGS = ['-ffunction-sections', '-fdata-sections'];

export interface BenchOptions {
  /** Generated FaaS apps (default 1000; 100 with quick). */
  apps?: number;
  quick?: boolean;
  /** Where bench.json, bench.md and bench.svg go (default bench/results). */
  out?: string;
  /** Objects, images, maps, loaders (default bench/work). */
  work?: string;
  /** Run real KSM when possible (default true). */
  ksm?: boolean;
  /** qemu guests per layout under KSM (default 20). */
  guests?: number;
  seed?: number;
  /** Parallel compile/link jobs (default: CPUs). */
  jobs?: number;
  /** cpu-bench boots per layout (default 5, quick 3). */
  runtimeRounds?: number;
  /** Apps linked side by side for the link-time figures (default 20, quick 8). */
  timingSamples?: number;
  /** Progress lines (default: stderr). */
  log?: (line: string) => void;
}

export interface CurvePoint {
  instances: number;
  pages: number;
  nonzero_pages: number;
  zero_pages: number;
  distinct_pages: number;
  memory_mib: number;
  content_bound_pages: number | null;
  elf_bytes: number;
  /** The same images packed (spacer compact --pack); Spacer layouts are packed as built. */
  elf_bytes_packed?: number;
}

/** KSM's counters (/sys/kernel/mm/ksm) at the end of a run, and the run's length (ms). */
export interface KsmCounters {
  pages_shared: number;
  pages_sharing: number;
  pages_unshared: number;
  zero_pages: number;
  general_profit: number | null;
  converged: boolean;
  ms: number;
}

export interface KsmFigures extends KsmCounters {
  full_scans: number;
  /** The model: D, and what KSM keeps given max_page_sharing (Σ over contents of ⌈m/max⌉). */
  model_distinct_pages: number;
  model_expected_kept: number;
  model_zero_pages: number;
  /** (pages_shared + pages_unshared − expected) / expected, in %. */
  deviation_pct: number;
  model_agrees: boolean;
}

export interface GuestFigures extends KsmCounters {
  guests: number;
  alive: number;
  /**
   * D of the page model for the same images, for comparison (guests also hold their RAM, BIOS, page
   * tables).
   */
  model_distinct_pages: number;
  memory_mib: number;
  error?: string;
}

/** The figures at N instances: those of the curve, and more. */
export interface LayoutFigures extends CurvePoint {
  d_over_l: number | null;
  /** L_pg, the page floor of the Spacer images (docs/metrics.md), applied to every layout. */
  page_floor_pages: number | null;
  /** Mean own pages per image: non-zero pages whose content no other image holds. */
  own_pages_per_image: number;
  /** Distinct pages of the whole workspace (the N FaaS apps and the example apps). */
  workspace_images: number;
  workspace_distinct_pages: number;
  ksm?: KsmFigures;
  guests?: GuestFigures;
}

/** ASLR hardening's cost (bench.json `hardening.<layout>`): D with and without the salts. */
export interface HardeningFigures {
  distinct_pages: number;
  /** The same images with every salt word zeroed. */
  distinct_pages_unsalted: number;
  /** Pages of all images that depend on the seed (each carries a salt). */
  seed_dependent_pages: number;
}

/** D when only read-only segments are mergeable (bench.json `mergeable_ro_only.<layout>`). */
export interface RoOnlyFigures {
  distinct_pages: number;
  /** Non-zero pages of writable segments: never merged, one per image. */
  writable_nonzero_pages: number;
  /** Real KSM with `loader --ro-only`, against the model of the read-only pages alone. */
  ksm?: KsmFigures;
}

export interface TimingFigures {
  samples: number;
  /** Medians in ms. */
  plan_ms: number;
  link_ms: number;
  finish_ms: number;
  rewrite_ms: number | null;
  image_ms: number;
  /** plan + link + finish (finish includes the rewrite): the link step as the build runs it. */
  link_step_ms: number;
  /** plan + finish: the helper's share of it. */
  helper_ms: number;
  helper_share: number;
}

export interface RewriteFigures {
  images: number;
  ms_median: number;
  sites_median: number;
  /** Instructions moved to the indirection tables. */
  trampolines_median: number;
  table_bytes_median: number;
  table_bytes_total: number;
  /**
   * Data relocations pointing outside the µlib (not rewritable; their pages differ between images).
   */
  data_pointers_median: number;
}

/** The link step as make runs it, CLI processes (bench/linkstep.ts); medians in ms. */
export interface LinkStepFigures {
  samples: number;
  ld_ms: number;
  /**
   * spacer link + finish + the image rule's compaction, the image new to the map and its cache
   * empty (null: no helper in this layout).
   */
  helper_cold_ms: number | null;
  /** The same, a new image of a workspace whose cache holds its other images' analyses. */
  helper_new_ms: number | null;
  /** The same, relinked after only the app µlib changed. */
  helper_warm_ms: number | null;
  /** The warm relink with a Node process per command (SPACER_SERVER=off). */
  helper_warm_direct_ms?: number | null;
  warm: { link_ms: number; finish_ms: number; compact_ms: number } | null;
  warm_over_ld: number | null;
  /** The helper's share of the warm link step (helper / (helper + ld)). */
  warm_helper_share: number | null;
}

/** One relink (spacer link + finish) against a map of `images` images (bench/mapscale.ts). */
export interface MapScalingFigures {
  images: number;
  map_bytes: number;
  samples: number;
  helper_ms: number;
}

export interface Target {
  id: string;
  what: string;
  value: string;
  status: 'PASS' | 'FAIL' | 'SKIP';
  note?: string;
}

export interface BenchResult {
  schema: 1;
  options: { apps: number; seed: number; guests: number; quick: boolean; jobs: number };
  machine: { cpus: number; kernel: string; accel: 'tcg' };
  layouts_supported: BenchLayout[];
  layouts_skipped: Partial<Record<BenchLayout, string>>;
  workload: {
    faas_apps: number;
    example_apps: string[];
    ulib_mix: Record<string, number>;
    nolibc_full: number;
  };
  layouts: Partial<Record<BenchLayout, LayoutFigures>>;
  /**
   * The loader marks only read-only segments mergeable (code, read-only data; never writable
   * data): D at N per layout, and how many of those pages are writable ones kept per instance.
   */
  mergeable_ro_only?: Partial<Record<BenchLayout, RoOnlyFigures>>;
  /** ASLR layouts: D with and without the hardening salts, side by side. */
  hardening?: Partial<Record<BenchLayout, HardeningFigures>>;
  curves: Partial<Record<BenchLayout, CurvePoint[]>>;
  ksm: {
    ran: boolean;
    reason?: string;
    settings_before?: Record<string, string>;
    settings_after?: Record<string, string>;
    settings_restored?: boolean;
    max_page_sharing?: number;
  };
  overheads: {
    link: Partial<Record<BenchLayout, TimingFigures>>;
    /**
     * Link step with the helper (spacer) over the link without it (default), medians of one run.
     */
    link_ratio_spacer: number | null;
    link_ratio_spacer_aslr: number | null;
    rewrite: {
      available: boolean;
      note: string;
      layouts: Partial<Record<BenchLayout, RewriteFigures>>;
    };
    runtime: {
      app: string;
      rounds: number;
      accel: 'tcg';
      ms_min: Partial<Record<BenchLayout, number>>;
      ms_median: Partial<Record<BenchLayout, number>>;
      ms_all: Partial<Record<BenchLayout, number[]>>;
      ratio: Partial<Record<BenchLayout, number>>;
      ratio_median: Partial<Record<BenchLayout, number>>;
      all_ok: boolean;
      note: string;
      /** Boots that failed once and were made again (why each failed), if any. */
      retried?: string[];
    } | null;
  };
  /** Per layout (issue #14); absent when the step did not run. */
  link_step?: Partial<Record<BenchLayout, LinkStepFigures>>;
  /** How the CLI was run for link_step and map_scaling. */
  link_step_entry?: string;
  /** By map size in images (100, 1000, 10000). */
  map_scaling?: Record<string, MapScalingFigures>;
  durations_ms: Record<string, number>;
  targets: Target[];
  out: string;
}

/** One run's settings (the options with their defaults) and what every step records. */
export interface BenchRun {
  quick: boolean;
  /** Generated FaaS apps. */
  N: number;
  seed: number;
  guests: number;
  jobs: number;
  /** Run real KSM when it can run here (false: --no-ksm). */
  ksm: boolean;
  out: string;
  work: string;
  log: (line: string) => void;
  /** Each step's wall time, in the order the steps ran (bench.json → durations_ms). */
  durations: Record<string, number>;
}
