// Firecracker (x86_64) and a Unikraft kvm image: every rule its ELF loader and boot path apply,
// and a simulation of the loader's copy, so that an image can be proved loadable with no KVM.
//
// Read for this (the rules below say which function each comes from):
//   - rust-vmm linux-loader 0.13.2 (pinned by Firecracker v1.16.1's Cargo.lock; 0.14.0 loads ELF
//     the same way), src/loader/elf/mod.rs: Elf::validate_header, Elf::load, parse_elf_note.
//   - Firecracker v1.16.1, src/vmm/src/arch/x86_64/: mod.rs (load_kernel, arch_memory_regions,
//     initrd_load_addr, configure_64bit_boot), layout.rs (fixed guest addresses), regs.rs
//     (setup_regs, setup_page_tables).
//   - Unikraft RELEASE-0.17.0: plat/kvm/x86/lxboot.S and lxboot.c (the Linux 64-bit boot entry
//     that CONFIG_KVM_VMM_FIRECRACKER selects), support/scripts/mkbootinfo.py (.uk_bootinfo from
//     the PT_LOADs), plat/common/memory.c (ukplat_memregion_list_coalesce), include/uk/plat/
//     memory.h (UK_ASSERT_VALID_MRD), plat/common/include/uk/plat/common/memory.h (list inserts).
//
// What the loader does, in short: it reads the 64-byte ELF64 header and the program headers; a
// header that is not PT_LOAD, or has no file bytes, is skipped (a PT_NOTE is first searched for a
// Xen PVH entry note); every other PT_LOAD has its p_filesz bytes read from p_offset into guest
// memory at p_paddr. p_vaddr and p_align are not read, offsets need not follow addresses, segments
// are not checked for overlap and nothing is zero-filled: guest RAM starts zeroed, and Unikraft
// does not clear its bss either. The kernel_end it returns (the highest p_paddr + p_memsz over
// the segments it copied) is not used by Firecracker on x86_64: the zero page, command line, page
// tables and MP table go to fixed addresses below 1 MiB, an initrd to the top of low RAM.
// (An open linux-loader pull request, #227, would also require p_align to be a multiple of 2 MiB;
// not in any release, and stock Unikraft images, p_align 0x1000, would fail it too.)
import { readFileSync } from 'node:fs';
import { SpacerError } from '../errors.js';
import { ElfFile, PT_LOAD, type ProgramHeader } from '../elf.js';
import { PHDR, readFields } from '../elflayout.js';
import { loadedMemory } from '../pack.js';

const PT_NOTE = 4;
const PF_X = 1;
const EM_X86_64 = 62;
const PAGE = 0x1000n;
const MiB = 1n << 20n,
  GiB = 1n << 30n;
/** layout.rs: HIMEM_START, where high memory (and the kernel) starts; load_kernel passes it. */
export const HIMEM_START = 0x10_0000n;
/** layout.rs: the 32-bit MMIO gap [3 GiB, 4 GiB) and the 64-bit one [256 GiB, 512 GiB). */
const MMIO32_START = 4n * GiB - GiB,
  MMIO32_END = 4n * GiB;
const MMIO64_START = 256n * GiB,
  MMIO64_END = 512n * GiB;
/** regs.rs setup_page_tables: the boot page tables identity-map [0, 1 GiB) with 2 MiB pages. */
const BOOT_MAPPED = GiB;
/** machine_config.rs: DEFAULT_MEM_SIZE_MIB. */
export const FIRECRACKER_DEFAULT_MEM = 128n * MiB;
/** linux-loader's note type for the PVH 32-bit entry point (XEN_ELFNOTE_PHYS32_ENTRY). */
const XEN_PHYS32_ENTRY = 18;
/** bootinfo.h: struct ukplat_bootinfo (80 bytes, magic first), then the region descriptors, 48
 *  bytes each without CONFIG_UKPLAT_MEMRNAME (the default). mkbootinfo.py writes 48-byte records
 *  too but sizes the list with 32, so its capacity field overstates the room. */
const BOOTINFO_HEADER = 80,
  MRD_SIZE = 48,
  BOOTINFO_MAGIC = 0xb007b0b0;

/** Every rule, by the name a violation starts with. */
export const FIRECRACKER_RULES = {
  'elf-header': 'linux-loader Elf::load: the file holds a 64-byte ELF header',
  'elf-magic': 'linux-loader Elf::validate_header: e_ident starts with 0x7f "ELF"',
  'elf-endian': 'linux-loader Elf::validate_header: little-endian (EI_DATA = ELFDATA2LSB)',
  'elf-class': 'linux-loader Elf::load: reads the header as ELF64 whatever EI_CLASS says',
  'elf-phentsize': 'linux-loader Elf::validate_header: e_phentsize = 56 (one Elf64_Phdr)',
  'elf-phoff': 'linux-loader Elf::validate_header: e_phoff >= 64 (after the ELF header)',
  'entry-high':
    'linux-loader Elf::load, given HIMEM_START by Firecracker load_kernel: ' + 'e_entry >= 1 MiB',
  'phdr-table': 'linux-loader Elf::load: all e_phnum program headers can be read from the file',
  'segment-in-file': "linux-loader Elf::load: a copied PT_LOAD's bytes lie in the file",
  'segment-in-ram':
    'linux-loader Elf::load + Firecracker arch_memory_regions: the copied ' +
    'bytes land in guest RAM',
  'segment-overflow': 'linux-loader Elf::load: p_paddr + p_memsz does not overflow 64 bits',
  'note-read': 'linux-loader parse_elf_note: every note header of a PT_NOTE can be read',
  'note-overflow':
    'linux-loader parse_elf_note: aligned note name and descriptor sizes ' + 'fit 32 bits',
  'pvh-note':
    'linux-loader parse_elf_note + Firecracker load_kernel: no Xen PVH entry note ' +
    "(Firecracker would start it in 32-bit PVH mode; Unikraft's x86 kvm entry is lxboot, 64-bit)",
  machine: 'Firecracker setup_regs: the vCPU starts in 64-bit mode at e_entry: x86-64 code',
  'entry-loaded': 'Firecracker setup_regs: e_entry lies in the file bytes of an executable PT_LOAD',
  'boot-mapped':
    'Firecracker setup_page_tables: entry and image below 1 GiB (what the boot ' +
    'page tables map until lxboot loads its own)',
  'low-memory':
    'Firecracker configure_system_for_boot / configure_64bit_boot: nothing ' +
    'loaded below 1 MiB (GDT, zero page, page tables, command line, MP table go there; e820 ' +
    'reserves 0x9fc00..1 MiB)',
  'ram-size': 'Firecracker configure_64bit_boot e820: the image, bss included, lies in guest RAM',
  initrd: 'Firecracker initrd_load_addr: the initrd, at the top of low RAM, misses the image',
  'vaddr-paddr':
    'Unikraft mkbootinfo.py (regions from p_vaddr) vs linux-loader (copies to ' +
    'p_paddr): p_vaddr = p_paddr',
  'page-start': 'Unikraft mkbootinfo.py + UK_ASSERT_VALID_MRD: every PT_LOAD starts on a page',
  overlap:
    'Unikraft ukplat_memregion_list_coalesce: kernel regions (PT_LOADs rounded ' +
    'to pages) never overlap',
  regions:
    'Unikraft lxboot_init_* + ukplat_memregion_list_insert/coalesce: the boot-info list ' +
    'holds the PT_LOADs, the boot regions and one split per PT_LOAD',
  memory: "the loader's copy (plus zeroed RAM) is the linked image's memory, byte for byte",
  'memory-extra': 'the loader writes nothing where the linked image has no memory',
  'memory-regions':
    "Unikraft mkbootinfo.py: every byte of the image's memory is in a kernel " +
    'region (else the allocator takes it as free RAM)',
  'memory-entry': "the entry point is the linked image's",
} as const;
export type FirecrackerRule = keyof typeof FIRECRACKER_RULES;

export interface FirecrackerOptions {
  /** Guest RAM (mem_size_mib). Unset: any size Firecracker allows (only the MMIO gap bounds it). */
  memBytes?: bigint;
  /** Size of an initrd handed to Firecracker, if any. */
  initrdBytes?: bigint;
  /** Capacity of Unikraft's boot-info region list. Default: the room in .uk_bootinfo when it is
   *  Unikraft's (all zeros before mkbootinfo.py, its magic after); 0 skips the rule. */
  regionCapacity?: number;
}

type Phdr = ProgramHeader & { index: number };

interface Parsed {
  data: Buffer;
  entry: bigint;
  machine: number;
  phdrs: Phdr[];
}

type Image = string | ElfFile | Buffer;
const bytesOf = (img: Image): Buffer =>
  typeof img === 'string' ? readFileSync(img) : Buffer.isBuffer(img) ? img : img.data;
const hex = (v: bigint) => `0x${v.toString(16)}`;
const alignUp = (v: bigint, a: bigint) => ((v + a - 1n) / a) * a;
const alignDown = (v: bigint, a: bigint) => (v / a) * a;
const U64 = (1n << 64n) - 1n;

/** Guest RAM regions for a memory size (arch_memory_regions: DRAM around the two MMIO gaps). */
export function firecrackerRam(memBytes?: bigint): [bigint, bigint][] {
  if (memBytes === undefined) return [[0n, MMIO32_START]];
  const out: [bigint, bigint][] = [];
  let at = 0n,
    left = memBytes;
  for (const [gap, end] of [
    [MMIO32_START, MMIO32_END],
    [MMIO64_START, MMIO64_END],
  ]) {
    const n = left < gap - at ? left : gap - at;
    if (n > 0n) out.push([at, at + n]);
    left -= n;
    if (left === 0n) return out;
    at = end;
  }
  out.push([at, at + left]);
  return out;
}

type Bad = (rule: FirecrackerRule, msg: string) => undefined;

/** Reads the image the way the loader does: undefined after an error that ends its reading. */
function parse(data: Buffer, bad: Bad): Parsed | undefined {
  // Elf::load reads a whole Elf64_Ehdr first, then validate_header checks it.
  if (data.length < 64) return bad('elf-header', `${data.length} bytes, no 64-byte ELF header`);
  if (data.readUInt32BE(0) !== 0x7f454c46) return bad('elf-magic', 'not an ELF file');
  if (data[5] !== 1) return bad('elf-endian', `EI_DATA ${data[5]}: not little-endian`);
  const phentsize = data.readUInt16LE(54);
  if (phentsize !== 56) return bad('elf-phentsize', `e_phentsize ${phentsize}, not 56`);
  const phoff = data.readBigUInt64LE(32);
  if (phoff < 64n) return bad('elf-phoff', `e_phoff ${phoff} overlaps the ELF header`);
  // Nobody checks the class: an ELF32 file's fields would be read at ELF64 offsets.
  if (data[4] !== 2) bad('elf-class', `EI_CLASS ${data[4]}: not ELF64 (the loader reads ELF64)`);
  const entry = data.readBigUInt64LE(24);
  if (entry < HIMEM_START) bad('entry-high', `e_entry ${hex(entry)} is below ${hex(HIMEM_START)}`);
  const phnum = data.readUInt16LE(56);
  if (phoff + BigInt(phnum * 56) > BigInt(data.length)) {
    return bad(
      'phdr-table',
      `${phnum} program headers at ${phoff} end past the file's ` + `${data.length} bytes`,
    );
  }
  const phdrs: Phdr[] = [];
  for (let i = 0; i < phnum; i++) {
    phdrs.push({
      index: i,
      ...readFields<ProgramHeader>(data, Number(phoff) + i * 56, PHDR[64]),
    });
  }
  return { data, entry, machine: data.readUInt16LE(18), phdrs };
}

/** What a PT_NOTE tells the loader (parse_elf_note): a PVH entry, none, or why it fails. */
function pvhEntry(data: Buffer, p: Phdr): { entry?: bigint; error?: [FirecrackerRule, string] } {
  const len = BigInt(data.length);
  const at = (pos: bigint, n: bigint) => p.offset + pos + n <= len;
  let pos = 0n;
  while (pos < p.filesz) {
    const fail = (rule: FirecrackerRule, msg: string) => ({
      error: [rule, `PT_NOTE ${p.index}: ${msg}`] as [FirecrackerRule, string],
    });
    if (!at(pos, 12n)) return fail('note-read', `note at +${pos} is past EOF`);
    const o = Number(p.offset + pos);
    const namesz = BigInt(data.readUInt32LE(o)),
      descsz = BigInt(data.readUInt32LE(o + 4));
    const type = data.readUInt32LE(o + 8);
    if (type === XEN_PHYS32_ENTRY && namesz === 4n) {
      if (!at(pos, 16n)) return fail('note-read', 'note name past EOF');
      if (data.toString('latin1', o + 12, o + 16) === 'Xen\0') {
        if (descsz < 4n) return fail('pvh-note', `PVH note of ${descsz} bytes`);
        if (!at(pos, 20n)) return fail('note-read', 'PVH entry past EOF');
        return { entry: BigInt(data.readUInt32LE(o + 16)) };
      }
    }
    const n = alignUp(namesz, 4n),
      d = alignUp(descsz, 4n);
    if (n > 0xffff_ffffn || d > 0xffff_ffffn) {
      return fail('note-overflow', `note sizes ${namesz}/${descsz}`);
    }
    pos += 12n + n + d;
  }
  return {};
}

const what = (p: Phdr) => `PT_LOAD ${p.index} (${hex(p.paddr)})`;

/** What each group of rules reads: the image, its PT_LOADs with memory, guest RAM, the options. */
interface Check {
  e: Parsed;
  mem: Phdr[];
  ram: [bigint, bigint][];
  opts: FirecrackerOptions;
  bad: Bad;
}

/** Elf::load, per program header, in order: where each copy comes from and goes to. */
function loaderRules({ e: { data, phdrs }, ram, bad }: Check): void {
  let pvh: bigint | undefined;
  for (const p of phdrs) {
    if (p.type === PT_NOTE) {
      // Each PT_NOTE replaces what the previous one said; the last one decides.
      const r = pvhEntry(data, p);
      if (r.error) bad(...r.error);
      pvh = r.entry;
    }
    if (p.type !== PT_LOAD || p.filesz === 0n) continue;
    if (p.offset + p.filesz > BigInt(data.length)) {
      bad(
        'segment-in-file',
        `${what(p)}: bytes ${p.offset}+${p.filesz} end past the file's ` + `${data.length}`,
      );
    }
    const end = p.paddr + p.filesz;
    if (!ram.some(([lo, hi]) => p.paddr >= lo && end <= hi)) {
      bad(
        'segment-in-ram',
        `${what(p)}: ${hex(p.paddr)}..${hex(end)} is not in guest RAM ` +
          `(${ram.map(([lo, hi]) => `${hex(lo)}..${hex(hi)}`).join(', ')})`,
      );
    }
    if (p.paddr + p.memsz > U64) bad('segment-overflow', `${what(p)}: p_paddr + p_memsz overflows`);
  }
  if (pvh !== undefined) {
    bad('pvh-note', `a Xen PVH note sends Firecracker to ${hex(pvh)} in 32-bit mode`);
  }
}

/** Firecracker's boot path: registers, page tables, what it writes into low memory, e820. */
function bootRules({ e, mem, ram, opts, bad }: Check): void {
  const entry = e.entry;
  if (e.machine !== EM_X86_64) bad('machine', `e_machine ${e.machine}, not x86-64`);
  const loads = e.phdrs.filter((p) => p.type === PT_LOAD);
  if (!loads.some((p) => p.flags & PF_X && entry >= p.paddr && entry < p.paddr + p.filesz)) {
    bad('entry-loaded', `e_entry ${hex(entry)} is in no executable PT_LOAD's file bytes`);
  }
  if (entry >= BOOT_MAPPED) bad('boot-mapped', `e_entry ${hex(entry)} is above 1 GiB`);
  const top = mem.reduce((m, p) => (p.paddr + p.memsz > m ? p.paddr + p.memsz : m), 0n);
  for (const p of mem) {
    const end = p.paddr + p.memsz;
    if (p.paddr < HIMEM_START) bad('low-memory', `${what(p)} starts below 1 MiB`);
    if (end > BOOT_MAPPED) bad('boot-mapped', `${what(p)} ends above 1 GiB`);
    if (!ram.some(([lo, hi]) => p.paddr >= lo && end <= hi)) {
      bad(
        'ram-size',
        `${what(p)} ends at ${hex(end)}, past guest RAM ` +
          `(${opts.memBytes === undefined ? 'below the MMIO gap' : `${opts.memBytes} bytes`})`,
      );
    }
  }
  if (opts.initrdBytes) {
    const low = ram[0][1];
    const at = opts.initrdBytes <= low ? alignDown(low - opts.initrdBytes, PAGE) : undefined;
    if (at === undefined || at < alignUp(top, PAGE)) {
      bad(
        'initrd',
        `an initrd of ${opts.initrdBytes} bytes goes to ` +
          `${at === undefined ? 'nowhere' : hex(at)}, over the image (ends ${hex(top)})`,
      );
    }
  }
}

/** Unikraft: .uk_bootinfo lists the PT_LOADs (mkbootinfo.py) as kernel regions. */
function unikraftRules({ e, mem, ram, opts, bad }: Check): void {
  for (const p of mem) {
    if (p.vaddr !== p.paddr) bad('vaddr-paddr', `${what(p)}: p_vaddr ${hex(p.vaddr)}`);
    if (p.vaddr % PAGE) bad('page-start', `${what(p)}: p_vaddr ${hex(p.vaddr)} is not on a page`);
  }
  const sorted = [...mem].sort((a, b) => (a.vaddr < b.vaddr ? -1 : a.vaddr > b.vaddr ? 1 : 0));
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1],
      b = sorted[i];
    if (alignUp(a.vaddr + a.memsz, PAGE) > alignDown(b.vaddr, PAGE)) {
      bad(
        'overlap',
        `PT_LOAD ${a.index} (${hex(a.vaddr)}+${hex(a.memsz)}) and ` +
          `PT_LOAD ${b.index} (${hex(b.vaddr)}) share a page`,
      );
    }
  }
  const capacity = opts.regionCapacity ?? bootinfoCapacity(e.data);
  if (capacity) {
    // lxboot_entry inserts the command line (Firecracker always passes one), the initrd, every
    // e820 entry (configure_64bit_boot: 3 fixed + one per RAM region) and 3 legacy regions
    // below 1 MiB; coalescing then splits free RAM once around each kernel region.
    const need = 2 * mem.length + 1 + (opts.initrdBytes ? 1 : 0) + 3 + ram.length + 3;
    if (need > capacity) {
      bad(
        'regions',
        `${mem.length} PT_LOADs need ${need} boot-info regions, the image has room ` +
          `for ${capacity}`,
      );
    }
  }
}

/**
 * The rules Firecracker's loader and boot path, and Unikraft's lxboot boot, apply to an image
 * (the final ELF64 file, as Firecracker's kernel_image_path gets it). Returns the violations,
 * each `<rule>: <what>` (rules: FIRECRACKER_RULES); empty: the image is loaded and entered.
 */
export function firecrackerLoadRules(img: Image, opts: FirecrackerOptions = {}): string[] {
  const out: string[] = [];
  const bad: Bad = (rule, msg) => {
    out.push(`${rule}: ${msg}`);
    return undefined;
  };
  const e = parse(bytesOf(img), bad);
  if (!e) return out;
  const ram = firecrackerRam(opts.memBytes);
  const mem = e.phdrs.filter((p) => p.type === PT_LOAD && p.memsz > 0n);
  const check: Check = { e, mem, ram, opts, bad };
  loaderRules(check);
  bootRules(check);
  unikraftRules(check);
  return out;
}

/** Regions Unikraft 0.17's .uk_bootinfo has room for; 0 when the image has none (or another
 *  platform's record under that name). */
function bootinfoCapacity(data: Buffer): number {
  let bytes: Buffer, size: number;
  try {
    const e = new ElfFile('image', data),
      s = e.section('.uk_bootinfo');
    if (!s || s.size <= BigInt(BOOTINFO_HEADER)) return 0;
    bytes = e.contents(s); // empty if NOBITS: zeros
    size = Number(s.size);
  } catch {
    return 0;
  }
  const ours =
    bytes.every((b) => b === 0) || (bytes.length >= 4 && bytes.readUInt32LE(0) === BOOTINFO_MAGIC);
  return ours ? Math.floor((size - BOOTINFO_HEADER) / MRD_SIZE) : 0;
}

/** One copy the loader makes: p_filesz file bytes to guest address p_paddr. */
export interface LoaderCopy {
  index: number;
  paddr: bigint;
  bytes: Buffer;
}

/**
 * The copies Elf::load makes, in order (PT_LOADs with file bytes; nothing is zero-filled).
 * Bytes past the end of the file are left out (that is a rule violation the loader fails on).
 */
export function firecrackerCopies(img: Image): LoaderCopy[] {
  const data = bytesOf(img);
  const e = parse(data, () => undefined);
  if (!e) throw new SpacerError('the image is not an ELF64 file that Firecracker reads');
  return e.phdrs
    .filter((p) => p.type === PT_LOAD && p.filesz > 0n)
    .map((p) => ({
      index: p.index,
      paddr: p.paddr,
      bytes: data.subarray(
        Math.min(Number(p.offset), data.length),
        Math.min(Number(p.offset + p.filesz), data.length),
      ),
    }));
}

/**
 * Guest memory after the loader's copies into zeroed RAM, compared with the memory the linked
 * image (the .dbg, or the stripped file before packing) describes: same bytes over its ranges,
 * nothing written elsewhere, every range inside a kernel region Unikraft's boot info will list,
 * same entry point. Returns the differences, as firecrackerLoadRules does.
 */
export function firecrackerMemoryDiff(img: Image, intended: string | ElfFile): string[] {
  const out: string[] = [];
  const bad: Bad = (rule, msg) => {
    out.push(`${rule}: ${msg}`);
    return undefined;
  };
  const want = typeof intended === 'string' ? ElfFile.load(intended) : intended;
  const data = bytesOf(img);
  const e = parse(data, () => undefined);
  if (!e) return ['memory: the image cannot be read as ELF64'];
  // Guest RAM, page by page; a page never written is zero.
  const pages = new Map<bigint, Buffer>();
  for (const c of firecrackerCopies(data)) {
    for (let i = 0; i < c.bytes.length;) {
      const a = c.paddr + BigInt(i),
        page = alignDown(a, PAGE),
        off = Number(a - page);
      let buf = pages.get(page);
      if (!buf) pages.set(page, (buf = Buffer.alloc(Number(PAGE))));
      const n = Math.min(Number(PAGE) - off, c.bytes.length - i);
      c.bytes.copy(buf, off, i, i + n);
      i += n;
    }
  }
  const zero = Buffer.alloc(Number(PAGE));
  const ranges = loadedMemory(want).map((r) => ({
    lo: r.lo,
    hi: r.lo + BigInt(r.mem.length),
    mem: r.mem,
  }));
  for (const r of ranges) {
    for (let a = alignDown(r.lo, PAGE); a < r.hi; a += PAGE) {
      const lo = a > r.lo ? a : r.lo,
        hi = a + PAGE < r.hi ? a + PAGE : r.hi;
      const got = (pages.get(a) ?? zero).subarray(Number(lo - a), Number(hi - a));
      const exp = r.mem.subarray(Number(lo - r.lo), Number(hi - r.lo));
      if (!got.equals(exp)) {
        let k = 0;
        while (got[k] === exp[k]) k++;
        const at = hex(lo + BigInt(k));
        bad('memory', `byte at ${at} is ${got[k]}, the linked image has ${exp[k]}`);
        break;
      }
    }
  }
  // Writes outside the linked image's memory.
  for (const c of firecrackerCopies(data)) {
    const lo = c.paddr,
      hi = c.paddr + BigInt(c.bytes.length);
    let covered = 0n;
    for (const r of ranges) {
      const x = lo > r.lo ? lo : r.lo,
        y = hi < r.hi ? hi : r.hi;
      if (y > x) covered += y - x;
    }
    if (covered < hi - lo) {
      bad(
        'memory-extra',
        `PT_LOAD ${c.index} writes ${hi - lo - covered} bytes ` +
          `at ${hex(lo)}..${hex(hi)} outside the linked image's memory`,
      );
    }
  }
  // Kernel regions as mkbootinfo.py derives them: p_vaddr, p_memsz rounded up to a page.
  const regions = e.phdrs
    .filter((p) => p.type === PT_LOAD && p.memsz > 0n)
    .map((p) => [p.vaddr, p.vaddr + alignUp(p.memsz, PAGE)] as const)
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  for (const r of ranges) {
    let at = r.lo;
    for (const [lo, hi] of regions) if (lo <= at && hi > at) at = hi;
    if (at < r.hi) {
      bad('memory-regions', `${hex(at)} (in ${hex(r.lo)}..${hex(r.hi)}) is in no PT_LOAD`);
    }
  }
  if (e.entry !== want.header.entry) {
    bad('memory-entry', `e_entry ${hex(e.entry)}, the linked image's is ${hex(want.header.entry)}`);
  }
  return out;
}

/** Both checks: the loader's rules, and the loaded memory against the linked image's. */
export function checkFirecrackerImage(
  img: Image,
  intended: string | ElfFile,
  opts: FirecrackerOptions = {},
): string[] {
  return [...firecrackerLoadRules(img, opts), ...firecrackerMemoryDiff(img, intended)];
}
