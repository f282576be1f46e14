// `spacer report`: the figures of docs/metrics.md for any set of images a user hands it.
//
// Figures: per image pages / non-zero / zero / own; totals P (over instances), D (distinct
// non-zero contents), zero pages, the content bound L, the page floor L_pg and D/L; pairwise
// shared non-zero pages; and, for images linked by Spacer (one output section `.<kind>.<µlib>`
// per µlib and kind), each µlib's pages and which of them are byte-identical somewhere in every
// other image. `--explain` says why pages differ (explain.ts, own.ts).
//
//   types.ts    the Report (the JSON `--json` prints) and its inputs
//   names.ts    image arguments (PATH@N) and display names
//   image.ts    loading an image, its µlibs' sections
//   bound.ts    the content bound L and the page floor L_pg
//   analyze.ts  the analysis (pages hashed once, contents interned)
//   format.ts   the text for people
//   explain.ts  --explain for two images: which bytes of each µlib differ, and why
//   own.ts      --explain: the cause of each own page
import { readImagePlan, type ImagePlan } from '../plan.js';
import { analyzeImages } from './analyze.js';
import { formatReport } from './format.js';
import { parseImageArg } from './names.js';

export * from './types.js';
export { parseImageArg, imageNames } from './names.js';
export { loadImage, ulibSections, planSection } from './image.js';
export { contentInputs, contentBound } from './bound.js';
export { analyzeImages } from './analyze.js';
export { formatReport, type FormatOptions } from './format.js';
export { readImagePlan, type ImagePlan };

/** `spacer report IMAGE[@N]...`: the text (or JSON) the command prints. */
export function reportCommand(
  args: readonly string[],
  opts: { json?: boolean; pairs?: boolean } = {},
): string {
  const r = analyzeImages(args.map(parseImageArg), { pairs: opts.pairs });
  return opts.json ? JSON.stringify(r, null, 2) : formatReport(r);
}

/** `spacer report --explain IMAGE...`: for two images, which bytes of each µlib differ and why;
 *  for every image, the cause of each of its own pages. */
export async function explainCommand(
  args: readonly string[],
  opts: { json?: boolean } = {},
): Promise<string> {
  const { explain, formatExplain } = await import('./explain.js');
  const { explainOwnPages, formatOwnPages } = await import('./own.js');
  const paths = args.map((a) => parseImageArg(a).path);
  const ulibs = paths.length === 2 ? explain(paths[0], paths[1]) : undefined;
  const own = explainOwnPages(args);
  if (opts.json) return JSON.stringify({ ...(ulibs ? { ulibs } : {}), own_pages: own }, null, 2);
  return [...(ulibs ? [formatExplain(args[0], args[1], ulibs), ''] : []), formatOwnPages(own)].join(
    '\n',
  );
}
