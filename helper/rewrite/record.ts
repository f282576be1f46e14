// `.spacer.rewrite`, the record of a rewrite: what was done, enough for verify to prove it and for
// a second run to recognise the same plan. Written as JSON by the rewrite, read (and every field
// checked) here.
// JSON: every field is validated where it is read, so the parsed value is `any` until then.
/* eslint-disable @typescript-eslint/no-explicit-any */
import { ElfFile, EM_X86_64, ET_EXEC, ET_REL } from '../elf.js';
import { SpacerError } from '../errors.js';
import { MODES, type Mode, type SiteKind } from '../x86/classify.js';
import { slotless, type PiForm } from '../x86/pi.js';
import { hex } from '../util/units.js';
import { REWRITE_SECTION, type RewritePlan, type RewriteStats } from './types.js';

/** `.spacer.rewrite`: what was done, enough to verify it and to recognise the same plan. */
export interface RewriteRecord {
  spacer_rewrite: 1;
  mode: Mode;
  plan: CanonicalPlan;
  stats: Omit<RewriteStats, 'ms' | 'alreadyDone'>;
  ulibs: RecordUlib[];
  /** ASLR mode: data fields redirected to entry stubs: address, original value, relocation type. */
  data?: { a: string; o: string; r: number }[];
}

export interface RecordUlib {
  name: string;
  text: string;
  textAddr: string;
  textSize: number;
  /** SHA-256 of the original `.text.<ulib>`: everything but the sites must be unchanged. */
  textSha256: string;
  ind: { section: string; addr: string; size: number; used: number };
  /** ASLR mode with position-independent entries: the pointer area. */
  ptr?: { section: string; addr: string; size: number; used: number };
  /**
   * ASLR mode: entry stubs at the start of the pointer area, one `jmp` per entry (hex addresses).
   */
  stubs?: { at: string; targets: string[] };
  /**
   * ASLR mode: copies of other µlibs' functions after the table: name, original address, copy's
   * address, bytes.
   */
  clones?: { sym: string; from: string; at: string; size: number }[];
  sites: RecordSite[];
}

export interface RecordSite {
  /** Address, original bytes (hex), kind, table entry address, the address it referred to. */
  a: string;
  o: string;
  k: SiteKind;
  e: string;
  t: string;
  /** Position-independent entry: its form and pointer slot. */
  f?: PiForm;
  p?: string;
  /** A call or jump that reaches a copy of its target instead of its entry: the copy's address. */
  c?: string;
  /** A slot-load trampoline (external mode): the GOT slot its load reads. */
  g?: string;
}

export interface CanonicalPlan {
  ulibs: {
    name: string;
    text: string;
    sections: string[];
    ind: { section: string; addr: string; size: number; table?: number; clones?: string[] } | null;
    ptr?: { section: string; addr: string; size: number };
    own?: boolean;
    named?: boolean;
    ownAbs?: boolean;
    pinned?: boolean;
    moved?: number[];
  }[];
}

export function canonicalPlan(plan: RewritePlan): CanonicalPlan {
  return {
    ulibs: plan.ulibs.map((u) => ({
      name: u.name,
      text: u.text,
      sections: [...u.sections],
      ind: u.ind
        ? {
            section: u.ind.section,
            addr: hex(u.ind.addr),
            size: u.ind.size,
            ...(u.ind.clones?.length ? { table: u.ind.table, clones: [...u.ind.clones] } : {}),
          }
        : null,
      ...(u.ptr
        ? { ptr: { section: u.ptr.section, addr: hex(u.ptr.addr), size: u.ptr.size } }
        : {}),
      ...(u.own ? { own: true } : {}),
      ...(u.named ? { named: true } : {}),
      ...(u.ownAbs ? { ownAbs: true } : {}),
      ...(u.pinned ? { pinned: true } : {}),
      ...(u.moved?.length ? { moved: [...u.moved] } : {}),
    })),
  };
}

export function planFromRecord(rec: RewriteRecord): RewritePlan {
  return {
    ulibs: rec.plan.ulibs.map((u) => ({
      name: u.name,
      text: u.text,
      sections: u.sections,
      ind: u.ind
        ? {
            section: u.ind.section,
            addr: BigInt(u.ind.addr),
            size: u.ind.size,
            ...(u.ind.clones?.length ? { table: u.ind.table, clones: u.ind.clones } : {}),
          }
        : undefined,
      ptr: u.ptr
        ? { section: u.ptr.section, addr: BigInt(u.ptr.addr), size: u.ptr.size }
        : undefined,
      ...(u.own ? { own: true } : {}),
      ...(u.named ? { named: true } : {}),
      ...(u.ownAbs ? { ownAbs: true } : {}),
      ...(u.pinned ? { pinned: true } : {}),
      ...(u.moved?.length ? { moved: [...u.moved] } : {}),
    })),
  };
}

/** Loads a linked x86-64 ELF64 executable, or throws one SpacerError line. */
export function loadImage(path: string, loaded?: ElfFile): ElfFile {
  const elf = loaded ?? ElfFile.load(path);
  if (elf.header.type === ET_REL)
    throw new SpacerError(
      `${path}: a relocatable object, not a linked image; pass the image (.dbg) linked with -Wl,--emit-relocs`,
    );
  if (elf.header.class !== 64 || elf.header.machine !== EM_X86_64)
    throw new SpacerError(
      `${path}: not an x86-64 ELF64 image; pass the ELF64 .dbg, not the ELF32 boot copy`,
    );
  if (elf.header.type !== ET_EXEC)
    throw new SpacerError(
      `${path}: not an executable (ELF type ${elf.header.type}); pass the linked, non-PIE image`,
    );
  return elf;
}

// Records already read, per parsed image: the finish's verify and harden passes read the same
// file's record (the record of a large image is a megabyte of JSON). Callers do not change it.
const recordOf = new WeakMap<ElfFile, RewriteRecord>();

/** The record of an earlier rewrite, if any; a record that does not parse is an error. */
export function readRecord(elf: ElfFile): RewriteRecord | undefined {
  const seen = recordOf.get(elf);
  if (seen) return seen;
  const rec = parseRecord(elf);
  if (rec) recordOf.set(elf, rec);
  return rec;
}

function parseRecord(elf: ElfFile): RewriteRecord | undefined {
  const s = elf.section(REWRITE_SECTION);
  if (!s) return undefined;
  const bad = (what: string): never => {
    throw new SpacerError(
      `${elf.path}: ${REWRITE_SECTION} is corrupt (${what}); relink the image and rewrite it again`,
    );
  };
  let rec: RewriteRecord | undefined;
  try {
    rec = JSON.parse(elf.contents(s).toString('utf8'));
  } catch {
    bad('not valid JSON');
  }
  if (rec?.spacer_rewrite !== 1 || !Array.isArray(rec!.ulibs) || !MODES.includes(rec!.mode)) {
    throw new SpacerError(
      `${elf.path}: ${REWRITE_SECTION} is not a lib-spacer rewrite record; relink the image and rewrite it again`,
    );
  }
  // Every field verify reads, checked here: a damaged record is one clear line, never a crash.
  checkRecordPlan(rec!.plan, bad);
  (rec!.ulibs as unknown[]).forEach((u, i) => checkRecordUlib(u, i, bad));
  if (
    rec!.data !== undefined &&
    (!Array.isArray(rec!.data) ||
      !rec!.data.every(
        (d: any) => isObject(d) && isHex(d.a) && isHex(d.o) && [1, 10, 11].includes(d.r),
      ))
  )
    bad('redirected data');
  return rec!;
}

type Bad = (what: string) => never;
const isHex = (v: unknown) => typeof v === 'string' && /^0x[0-9a-f]{1,16}$/i.test(v);
const isBytes = (v: unknown) => typeof v === 'string' && /^([0-9a-f]{2}){1,15}$/i.test(v);
const isName = (v: unknown) => typeof v === 'string' && /^[\x21-\x7e]{1,200}$/.test(v);
const isNames = (v: unknown) => Array.isArray(v) && v.every(isName);
const isCount = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isObject = (v: unknown): v is any => typeof v === 'object' && v !== null;
const isKind = (v: unknown) => typeof v === 'string' && /^[a-z]{1,16}$/.test(v);
/** An object each of whose `tests` keys passes its test. */
const hasFields = (v: unknown, tests: Record<string, (x: unknown) => boolean>) =>
  isObject(v) && Object.entries(tests).every(([k, test]) => test(v[k]));
const AREA = { section: isName, addr: isHex, size: isCount };
/** A table or pointer area: its section, address and size (and the bytes used, in a record). */
const isArea = (v: any, used: boolean) => hasFields(v, AREA) && (!used || isCount(v.used));
const RECORD_ULIB = {
  name: isName,
  text: isName,
  textAddr: isHex,
  textSize: isCount,
  textSha256: (v: unknown) => typeof v === 'string',
};
const SITE = { a: isHex, o: isBytes, e: isHex, t: isHex, k: isKind };
const CLONE = { sym: isName, from: isHex, at: isHex, size: isCount };

/** The record's copy of the plan: each entry's names, table, pointer area, copies and flags. */
function checkRecordPlan(recPlan: unknown, bad: Bad): void {
  const plan = recPlan as { ulibs?: unknown };
  if (!isObject(plan) || !Array.isArray(plan.ulibs)) bad('no plan');
  for (const [i, pu] of (plan.ulibs as any[]).entries()) {
    if (!hasFields(pu, { name: isName, text: isName }) || !isNames(pu.sections))
      bad(`plan entry ${i}`);
    if (pu.ind !== null && !isArea(pu.ind, false)) bad(`plan entry ${i} table`);
    if (pu.ptr !== undefined && !isArea(pu.ptr, false)) bad(`plan entry ${i} pointer area`);
    if (
      pu.ind &&
      (pu.ind.clones !== undefined || pu.ind.table !== undefined) &&
      (!isCount(pu.ind.table) || !isNames(pu.ind.clones))
    )
      bad(`plan entry ${i} copies`);
    if (
      (pu.own !== undefined && pu.own !== true) ||
      (pu.named !== undefined && pu.named !== true) ||
      (pu.ownAbs !== undefined && pu.ownAbs !== true) ||
      (pu.pinned !== undefined && pu.pinned !== true)
    )
      bad(`plan entry ${i} own`);
    if (
      pu.moved !== undefined &&
      !(Array.isArray(pu.moved) && pu.moved.every((x: unknown) => isCount(x)))
    )
      bad(`plan entry ${i} moved`);
  }
}

/** One µlib of the record: its code, table, pointer area, stubs, copies and sites. */
function checkRecordUlib(ru: unknown, i: number, bad: Bad): void {
  const u = ru as any;
  if (!hasFields(u, RECORD_ULIB)) bad(`µlib entry ${i}`);
  if (!isArea(u.ind, true)) bad(`µlib entry ${i} table`);
  if (u.ptr !== undefined && !isArea(u.ptr, true)) bad(`µlib entry ${i} pointer area`);
  if (
    u.stubs !== undefined &&
    (!isObject(u.stubs) ||
      !isHex(u.stubs.at) ||
      !Array.isArray(u.stubs.targets) ||
      !u.stubs.targets.every(isHex))
  )
    bad(`µlib entry ${i} stubs`);
  if (
    u.clones !== undefined &&
    (!Array.isArray(u.clones) || !u.clones.every((c: unknown) => hasFields(c, CLONE)))
  )
    bad(`µlib entry ${i} copies`);
  if (!Array.isArray(u.sites)) bad(`µlib entry ${i} sites`);
  for (const [j, x] of (u.sites as any[]).entries()) {
    if (!hasFields(x, SITE)) bad(`µlib entry ${i} site ${j}`);
    if (
      (x.f !== undefined || x.p !== undefined) &&
      (typeof x.f !== 'string' ||
        !/^[a-z0-9]{1,16}$/.test(x.f) ||
        (slotless(x.f) ? x.p !== undefined : !isHex(x.p)))
    )
      bad(`µlib entry ${i} site ${j} pointer`);
    if (x.c !== undefined && !isHex(x.c)) bad(`µlib entry ${i} site ${j} copy`);
    if (x.g !== undefined && !isHex(x.g)) bad(`µlib entry ${i} site ${j} slot`);
  }
}
