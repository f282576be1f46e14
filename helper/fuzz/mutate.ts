// Structure-aware mutations of a real ELF image. Each mutation is drawn from a case's own PRNG
// and described in one line (field, old value, new value), so a finding can be reproduced from
// the description alone as well as from the seed and the case number.
import type { ImageStruct } from './image.js';
import { type Op, type State } from './fields.js';
import { bitflip, byteRun, ehdrField, phdrField, shdrField, truncate } from './headers.js';
import { corruptText, jsonSection, mutateJson } from './json.js';
import type { Rng } from './rng.js';
import { codeBytes, reloc, strtab, symbol } from './tables.js';

export { imageStruct, type ImageStruct, type RelocSec, type SiteRef } from './image.js';
export { corruptText, mutateJson } from './json.js';

export const OPS: readonly (readonly [string, Op, number])[] = [
  ['bitflip', bitflip, 8],
  ['byte-run', byteRun, 8],
  ['truncate', truncate, 9],
  ['ehdr', ehdrField, 10],
  ['shdr', shdrField, 14],
  ['phdr', phdrField, 7],
  ['json', jsonSection, 12],
  ['reloc', reloc, 12],
  ['symbol', symbol, 6],
  ['code', codeBytes, 12],
  ['strtab', strtab, 3],
];

export interface Mutation {
  data: Buffer;
  /** The mutation classes applied (names of OPS, 'plan-file'), and one line per change. */
  kinds: string[];
  ops: string[];
  /** Mutated link plan file, when the plan is mutated too. */
  plan?: Buffer;
}

/**
 * One to three mutations of the image (truncation, if drawn, last), sometimes also of the link plan
 * file.
 */
export function mutate(rng: Rng, st: ImageStruct, planText: string | null): Mutation {
  const s: State = { buf: Buffer.from(st.data), ops: [] };
  const k = rng.weighted([
    [1, 70],
    [2, 20],
    [3, 10],
  ] as const);
  const chosen: (readonly [string, Op, number])[] = [];
  for (let i = 0; i < k; i++) chosen.push(rng.weighted(OPS.map((o) => [o, o[2]] as const)));
  chosen.sort((a, b) => (a[0] === 'truncate' ? 1 : 0) - (b[0] === 'truncate' ? 1 : 0));
  const kinds: string[] = [];
  for (const [name, op] of chosen) {
    if (op(rng, st, s)) kinds.push(name);
    else {
      bitflip(rng, st, s); // not applicable to this image
      kinds.push('bitflip');
    }
  }
  let plan: Buffer | undefined;
  if (planText !== null && rng.chance(0.05)) {
    const ops: string[] = [];
    if (rng.chance(0.3)) plan = corruptText(rng, Buffer.from(planText), ops, 'plan file');
    else
      plan = Buffer.from(
        JSON.stringify(mutateJson(rng, JSON.parse(planText), ops, 'plan file'), null, 2),
      );
    s.ops.push(...ops);
    kinds.push('plan-file');
  }
  return { data: s.buf, kinds, ops: s.ops, plan };
}
