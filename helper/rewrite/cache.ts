// The analysis cache: the decode of a µlib's code and the sites found in it, kept (in the cache
// next to the map, cache/store.ts) by the hash of everything that decode reads. A µlib variant at
// the same addresses links to the same bytes in every image (that is what the map is for), so a
// relink where only the app changed, or a new image of µlibs the workspace already linked at these
// addresses, finds its analyses here instead of decoding again; the verify pass, which analyses
// the code rebuilt from the record, finds the rewrite's own entry.
//
// The key leaves out what a relocated field holds (an address elsewhere, which moves when another
// µlib does) and the image's symbol numbers (which change when any µlib does): on a hit the
// fields' values are read again from the code, the symbols named back.
import { createHash } from 'node:crypto';
import { helperCodeId } from '../cache/code-id.js';
import { cacheUse, readEntryShared, writeEntry } from '../cache/store.js';
import { R_X86_64, type CodeRef, type Site } from '../x86/classify.js';
import type { Extent } from '../x86/extents.js';

/** What the decode of a µlib's code gives the rest of its analysis. */
export interface Found {
  sites: Site[];
  /** Relocations in data within the code that point outside. */
  data: CodeRef[];
  /** Targets of the near branches that land inside the code. */
  targets: bigint[];
}

/** Everything the decode reads. */
export interface FoundInputs {
  mode: string;
  forms: { ownAbs: boolean; pinned: boolean };
  lo: bigint;
  bytes: Uint8Array;
  extents: readonly Extent[];
  refs: readonly CodeRef[];
  /** Offsets of instructions moved though no relocation names them (RewriteUlib.moved). */
  moved: readonly number[];
}

const T = R_X86_64;
const SIZES: [number, number[]][] = [
  [1, [T._8, T.PC8]],
  [2, [T._16, T.PC16]],
  [8, [T._64, T.PC64, T.GOTOFF64, T.GOT64, T.GOTPCREL64, T.GOTPC64, T.SIZE64]],
  [4, [T.PC32, T.PLT32, T.GOTPCREL, T._32, T._32S, T.GOTPCRELX, T.REX_GOTPCRELX, T.GOTTPOFF]],
  [4, [T.TPOFF32, T.DTPOFF32, T.GOTPC32, T.SIZE32, T.GOT32]],
];
const FIELD_SIZE = new Map<number, number>(SIZES.flatMap(([n, ts]) => ts.map((t) => [t, n])));

/** Bytes of the field a relocation of `type` patches; 0 when unsure (the field stays keyed). */
function fieldSize(type: number): number {
  return FIELD_SIZE.get(type) ?? 0;
}

/** Zeroes in `m` (code loaded at `lo`) every field a relocation patches. */
export function maskFields(
  m: Buffer,
  lo: bigint,
  refs: readonly { at: bigint; type: number }[],
): Buffer {
  for (const r of refs) {
    const off = Number(r.at - lo),
      n = fieldSize(r.type);
    if (n && off >= 0 && off + n <= m.length) m.fill(0, off, off + n);
  }
  return m;
}

// Where the code is copied to have its fields zeroed (kept: the link server hashes every µlib of
// every link, and a fresh image-sized buffer costs its page faults each time).
let scratch = Buffer.alloc(0);

/**
 * The code with every relocated field zeroed, fed to `h`: what a field holds (an address
 * elsewhere, which moves when another µlib does) changes no instruction's length, kind or
 * operands, so the decode is keyed without it and its values are read again from the code on a
 * hit (`refreshed`).
 */
function hashMasked(
  h: ReturnType<typeof createHash>,
  bytes: Uint8Array,
  lo: bigint,
  refs: readonly CodeRef[],
): void {
  if (scratch.length < bytes.length)
    scratch = Buffer.allocUnsafe(Math.max(bytes.length, 2 * scratch.length));
  const m = scratch.subarray(0, bytes.length);
  m.set(bytes);
  h.update(maskFields(m, lo, refs));
}

/** The key of a decode: SHA-256 of its inputs and the helper's code. */
export function foundKey(x: FoundInputs): string {
  const h = createHash('sha256');
  h.update(
    `spacer-analysis 2 ${helperCodeId()} ${process.version} ${x.mode} ${+x.forms.ownAbs}${+x.forms.pinned}\n`,
  );
  h.update(`${x.lo.toString(16)} ${x.bytes.length}\n`);
  if (x.moved.length) h.update(`moved ${x.moved.join(' ')}\n`);
  hashMasked(h, x.bytes, x.lo, x.refs);
  const lines: string[] = [];
  for (const e of x.extents)
    lines.push(`e ${e.start.toString(16)} ${e.end.toString(16)} ${e.name}\n`);
  for (const r of x.refs)
    lines.push(
      `r ${r.at.toString(16)} ${r.type} ${r.place} ${r.addend.toString(16)} ${r.symKey}\n`,
    );
  h.update(lines.join(''));
  return h.digest('hex');
}

// The verify pass asks again for what the rewrite pass just read or computed (per cache folder
// and command line).
const memo = new Map<string, Found>();
let memoDir: string | undefined;
let memoRun = 0;

/** A field of `size` bytes at `off`, sign-extended. */
function signed(v: Buffer, off: number, size: number): bigint {
  if (size === 1) return BigInt(v.readInt8(off));
  if (size === 2) return BigInt(v.readInt16LE(off));
  if (size === 4) return BigInt(v.readInt32LE(off));
  if (size === 8) return v.readBigInt64LE(off);
  return 0n;
}

/**
 * The sites of a cached decode with the values their fields hold in `bytes`: a near branch's
 * target, a memory operand's address (the rest of an instruction does not depend on them).
 */
function refreshed(f: Found, code: Uint8Array, lo: bigint): Found | undefined {
  // A branch whose displacement iced did not place cannot be read again: decode afresh.
  if (f.sites.some((s) => s.insn.nearBranch && !s.insn.immSize)) return undefined;
  const bytes = Buffer.from(code.buffer, code.byteOffset, code.length);
  return {
    ...f,
    sites: f.sites.map((s) => {
      const i = s.insn,
        off = Number(i.ip - lo),
        end = i.ip + BigInt(i.len);
      const insn = { ...i };
      if (i.nearBranch)
        insn.target = BigInt.asUintN(64, end + signed(bytes, off + i.immOff, i.immSize));
      if (i.hasMem) {
        const d = i.dispSize ? signed(bytes, off + i.dispOff, i.dispSize) : 0n;
        insn.memAddr = BigInt.asUintN(64, i.ipRel ? end + d : d);
      }
      return { ...s, insn };
    }),
  };
}

// A symbol of the code, named by the order of its first relocation (NUL-led: no symbol name
// holds a NUL).
const token = (n: number) => `\u0000${n}\u0000`;
const TOKEN = new RegExp(`${token(0).slice(0, 1)}(\\d+)${token(0).slice(0, 1)}`, 'g');

/**
 * The relocations with each symbol named by its order of first use instead of the image's
 * numbering (`name#index` for a local, `§shndx` for a section): the same code at the same address
 * reads the same in every image. `names` maps the order back.
 */
export function canonicalSymbols(refs: readonly CodeRef[]): { refs: CodeRef[]; names: string[] } {
  const order = new Map<string, number>();
  const names: string[] = [];
  const out = refs.map((r) => {
    let n = order.get(r.symKey);
    if (n === undefined) order.set(r.symKey, (n = names.push(r.symKey) - 1));
    return { ...r, symKey: token(n) };
  });
  return { refs: out, names };
}

/** `f` (from canonical relocations) with the symbols' names of this image; `f` is not changed. */
export function namedBack(f: Found, names: readonly string[]): Found {
  const back = (s: string) => s.replace(TOKEN, (_m, n: string) => names[Number(n)]);
  return {
    sites: f.sites.map((x) => ({
      ...x,
      key: back(x.key),
      refs: x.refs.map((r) => ({ ...r, target: back(r.target) })),
    })),
    data: f.data.map((r) => ({ ...r, symKey: back(r.symKey) })),
    targets: f.targets,
  };
}

/** The decode of `x`: from the cache when it holds it, else `compute()`'s (then kept). */
export function cachedFound(x: FoundInputs, key: string | undefined, compute: () => Found): Found {
  const dir = cacheUse.dir;
  if (!dir || !key) return compute();
  if (dir !== memoDir || cacheUse.run !== memoRun) {
    memo.clear();
    memoDir = dir;
    memoRun = cacheUse.run;
  }
  // The verify pass asks again for what the rewrite pass just read or computed.
  const seen = memo.get(key) ?? readEntryShared<Found>(dir, 'analysis', key);
  const hit = seen && refreshed(seen, x.bytes, x.lo);
  if (seen) memo.set(key, seen);
  if (hit) {
    cacheUse.hits++;
    return hit;
  }
  cacheUse.misses++;
  const f = compute();
  writeEntry(dir, 'analysis', key, f);
  memo.set(key, f);
  return f;
}
