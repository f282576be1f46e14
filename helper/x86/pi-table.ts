// A µlib's table and pointer area in ASLR mode: one position-independent entry (pi.ts,
// pi-encode.ts) per site that has a form, pointer slots shared by what the relocations name, and
// classic entries (table.ts) for the rest.
import { SpacerError } from '../errors.js';
import { type Operand, type SiteKind } from './classify.js';
import { withInstruction } from './decode.js';
import { directEntry, encodePi } from './pi-encode.js';
import {
  NARROW_SLOT,
  narrowLoad,
  piPlan,
  PTR_SLOT,
  slotless,
  type PiForm,
  type PiPlan,
} from './pi.js';
import { TableError, TableWriter, encodeTrampoline } from './table.js';

/** Forms whose entry reads no pointer slot. */
const hasSlot = (form: PiForm) => !slotless(form);

export interface PiSite {
  kind: SiteKind;
  ip: bigint;
  orig: Buffer;
  /** Which operands refer outside (from the relocations). */
  outside: Operand[];
  /** What each outside operand refers to (classify.refTarget): sites that agree share a slot. */
  targets?: Partial<Record<Operand, string>>;
  /**
   * Its one outside reference is RIP-relative to the µlib's own data (classify.refersToOwnData).
   */
  ownData?: boolean;
}

/**
 * The pointer slot a position-independent entry reads: one key per slot (two adjacent slots for
 * mem2), or undefined when the site's slot is its own (no targets known). Addresses the code
 * takes become their entry stubs' (`canon`), those it branches to or reads through do not: the
 * same target in two roles needs two slots.
 */
export function slotKey(
  plan: PiPlan,
  outside: Operand[],
  targets?: Partial<Record<Operand, string>>,
  narrow = false,
): string | undefined {
  if (!targets) return undefined;
  // A 4-byte slot (a load into a 32-bit register) is never an 8-byte reader's.
  if (narrow) {
    const k = slotKey(plan, outside, targets);
    return k === undefined ? undefined : `narrow ${k}`;
  }
  const taken = plan.form === 'load' || plan.form === 'immreg';
  if (plan.form === 'mem2') {
    const d = targets.disp,
      m = targets.imm;
    return d && m ? `pair ${d} taken ${m}` : undefined;
  }
  const t = targets[outside[0]];
  return t ? `${taken ? 'taken' : 'reached'} ${t}` : undefined;
}

export interface PiTableRequest {
  addr: bigint;
  size: number;
  ptrAddr: bigint;
  ptrSize: number;
  sites: PiSite[];
  what: string;
  /**
   * The address every image agrees on for an address of code (its entry stub); identity without.
   */
  canon?: (v: bigint) => bigint;
  /** Each site's plan, when the caller already has them (piPlan per site otherwise). */
  plans?: (PiPlan | undefined)[];
  /** The table lives on pages of this image only (the image's own code): branch entries may jump
   * straight to their targets (`jmp rel32`, padded to the length of `jmp [P]`), no indirect jump.
   * */
  direct?: boolean;
}

export interface PiTable {
  bytes: Buffer;
  used: number;
  ptr: Buffer;
  ptrUsed: number;
  /** Per site, in order: its entry, its pointer slot and form (undefined: a classic entry). */
  entryAt: bigint[];
  ptrAt: (bigint | undefined)[];
  plans: (PiPlan | undefined)[];
}

/**
 * Lays out a µlib's table in ASLR mode, one entry per site, and its pointer area: one slot per
 * distinct slot key (two for mem2); sites without targets get slots of their own. Two addresses
 * equal in one image may differ in another, so slots are shared by what the relocations name,
 * never by value, and the layout is the same in every image. The position-independent entries come
 * first,
 * in site order, then the classic ones: those hold addresses, and at the end of the table they
 * cost the fewest pages their sharing. Throws TableError when either overflows.
 */
export function buildPiTable(r: PiTableRequest): PiTable {
  const t = new TableWriter(r.addr);
  const area = new PointerArea(r.ptrAddr, r.what);
  const n = r.sites.length;
  const entryAt: bigint[] = new Array(n),
    ptrAt: (bigint | undefined)[] = new Array(n).fill(undefined);
  const plans = canonicalPlans(r);
  // The slots first (8-byte ones, then the 4-byte ones after them), the entries then encode them.
  r.sites.forEach((s, k) => {
    const plan = plans[k];
    if (plan && hasSlot(plan.form)) area.want(k, plan, s);
  });
  area.place();
  r.sites.forEach((s, k) => {
    const plan = plans[k];
    if (!plan) return;
    entryAt[k] = t.cur;
    if (!hasSlot(plan.form)) {
      t.put(encodePi(s.orig, s.ip, plan, t.cur, 0n, r.what));
      return;
    }
    const p = (ptrAt[k] = area.at(k));
    t.put(
      r.direct && plan.form === 'jmpptr'
        ? directEntry(t.cur, plan.value, r.what)
        : encodePi(s.orig, s.ip, plan, t.cur, p, r.what),
    );
  });
  r.sites.forEach((s, k) => {
    if (plans[k]) return;
    if (s.kind === 'got') t.align8();
    entryAt[k] = t.cur;
    t.put(classicEntry(s, t.cur, r.what));
  });
  const bytes = t.bytes(r.size, r.what);
  const ptr = area.bytes(r.ptrSize);
  return { bytes, used: t.used, ptr, ptrUsed: area.used, entryAt, ptrAt, plans };
}

/**
 * Each site's plan (piPlan unless the caller has them), copied: addresses the code takes (not the
 * ones it branches to or reads through) become their stubs' without touching the caller's plans.
 */
function canonicalPlans(r: PiTableRequest): (PiPlan | undefined)[] {
  const plans = (
    r.plans ?? r.sites.map((s) => piPlan(s.orig, s.ip, s.kind, s.outside, s.ownData))
  ).map((p) => (p ? { ...p } : undefined));
  if (r.canon) {
    for (const p of plans) {
      if (p?.form === 'load' || p?.form === 'immreg') p.value = r.canon(p.value);
      else if (p?.form === 'mem2') p.value2 = r.canon(p.value2!);
    }
  }
  return plans;
}

/**
 * The pointer area: one slot per distinct slot key (two for mem2), the rest one per site. A `load`
 * that reads 32 bits (narrowLoad) gets a 4-byte slot, after every 8-byte one; its key is its own
 * (an 8-byte reader of the same address gets another slot).
 */
class PointerArea {
  private readonly wide: bigint[] = [];
  private readonly narrow: bigint[] = [];
  private readonly shared = new Map<string, { narrow: boolean; i: number }>();
  /** Per site: which list and index. */
  private readonly of = new Map<number, { narrow: boolean; i: number }>();

  constructor(
    private readonly addr: bigint,
    private readonly what: string,
  ) {}

  /** Site `k` reads a slot: a new one, or the one its key already has. */
  want(k: number, plan: PiPlan, s: PiSite): void {
    const narrow = plan.form === 'load' && withInstruction(s.orig, s.ip, (i) => narrowLoad(i.code));
    const key = slotKey(plan, s.outside, s.targets, narrow);
    const had = key === undefined ? undefined : this.shared.get(key);
    if (had === undefined) {
      const list = narrow ? this.narrow : this.wide;
      const at = { narrow, i: list.length };
      list.push(plan.value);
      if (plan.form === 'mem2') list.push(plan.value2!);
      if (key !== undefined) this.shared.set(key, at);
      this.of.set(k, at);
      return;
    }
    // Same symbol, class and addend: the same value. Another value means the code's bytes do not
    // say what its relocations say (an image changed after the link).
    const list = had.narrow ? this.narrow : this.wide;
    if (list[had.i] !== plan.value || (plan.form === 'mem2' && list[had.i + 1] !== plan.value2)) {
      throw new SpacerError(
        `${this.what}: the site at 0x${s.ip.toString(16)} reaches another address than its relocation (${key}) says; the code was changed after the link: relink the image`,
      );
    }
    this.of.set(k, had);
  }

  /** Every slot wanted: the 4-byte ones start after the 8-byte ones. */
  place(): void {
    for (const v of this.narrow)
      if (BigInt.asUintN(64, v) >= 1n << 32n)
        throw new SpacerError(`${this.what}: a 32-bit load reaches 0x${v.toString(16)}`);
  }

  /** Site `k`'s slot. */
  at(k: number): bigint {
    const x = this.of.get(k)!;
    return x.narrow
      ? this.addr + BigInt(this.wide.length * PTR_SLOT + x.i * NARROW_SLOT)
      : this.addr + BigInt(x.i * PTR_SLOT);
  }

  get used(): number {
    return this.wide.length * PTR_SLOT + this.narrow.length * NARROW_SLOT;
  }

  /** The area's `size` bytes, the slots then 0xCC; TableError when they do not fit. */
  bytes(size: number): Buffer {
    if (this.used > size)
      throw new TableError(
        `${this.what}: the pointer area needs ${this.used} bytes, the plan reserves ${size}`,
        undefined,
        this.used,
      );
    const ptr = Buffer.alloc(size, 0xcc);
    this.wide.forEach((v, k) => ptr.writeBigUInt64LE(BigInt.asUintN(64, v), k * PTR_SLOT));
    const from = this.wide.length * PTR_SLOT;
    this.narrow.forEach((v, k) => ptr.writeUInt32LE(Number(v), from + k * NARROW_SLOT));
    return ptr;
  }
}

/** A site no position-independent form fits: its classic entry (a GOT slot, 8-aligned by the
 *  caller, or a trampoline). */
function classicEntry(s: PiSite, at: bigint, what: string): Buffer {
  if (s.kind === 'got') {
    // Classic: lea becomes a load of an 8-byte slot holding the address.
    const v = withInstruction(s.orig, s.ip, (i) => i.ipRelMemoryAddress);
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt.asUintN(64, v));
    return b;
  }
  if (s.kind === 'trampoline' || s.kind === 'callind')
    return encodeTrampoline({ kind: s.kind, ip: s.ip, orig: s.orig }, at, what);
  throw new TableError(
    `${what}: site 0x${s.ip.toString(16)}: a branch with no position-independent entry`,
  );
}
