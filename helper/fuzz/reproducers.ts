// Minimal reproducers of the fuzz findings, as tiny hand-made ELF files and link plans (a few
// hundred bytes each, instead of a 400 KB mutated image): test/fixtures/fuzz/ holds what
// `writeReproducers` writes, and test/fuzz.test.ts runs each through the fuzz steps. Each entry
// names the fuzz case that found it and the helper function at fault.
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PT_LOAD, SHF_ALLOC, SHF_EXECINSTR, SHT_NOBITS, SHT_PROGBITS } from '../elf.js';
import { tinyElf64, type TinyElf, type TinySection } from './tiny.js';

export interface Reproducer {
  /** File name in the fixtures folder. */
  file: string;
  /** Link plan the rewrite step uses (a file of this folder); none: an empty plan. */
  plan?: string;
  /** What a correct helper gives: success or one clear error line. */
  expect: string;
  /** What the helper does today, where. */
  finding: string;
  /** The fuzz case(s) that found it (npm run fuzz, seed 1, 5000 cases). */
  found: string;
}

const TEXT = 0x401000n,
  IND = 0x402000n;
const nops = Buffer.alloc(16, 0x90);
const text: TinySection = {
  name: '.text.libx',
  type: SHT_PROGBITS,
  flags: SHF_ALLOC | SHF_EXECINSTR,
  addr: TEXT,
  data: nops,
  align: 16n,
};
const ind = (data: Buffer<ArrayBufferLike> = Buffer.alloc(16, 0xcc)): TinySection => ({
  name: '.ind.libx',
  type: SHT_PROGBITS,
  flags: SHF_ALLOC | SHF_EXECINSTR,
  addr: IND,
  data,
  align: 16n,
});
const load = {
  type: PT_LOAD,
  flags: 5,
  offset: '.text.libx',
  vaddr: TEXT,
  filesz: 16n,
  memsz: 16n,
};

/** A rewrite record of the tiny image that verifies (no sites), with `edit` applied. */
function record(edit: (r: any) => void = () => {}): string {
  const r: any = {
    spacer_rewrite: 1,
    mode: 'external',
    plan: {
      ulibs: [
        {
          name: 'libx',
          text: '.text.libx',
          sections: ['.text.libx'],
          ind: { section: '.ind.libx', addr: '0x402000', size: 16 },
        },
      ],
    },
    stats: {
      sites: 0,
      stubs: 0,
      trampolines: 0,
      got: 0,
      tableBytes: 0,
      dataPointers: 0,
      dataPointerPages: [],
      perUlib: {},
    },
    ulibs: [
      {
        name: 'libx',
        text: '.text.libx',
        textAddr: '0x401000',
        textSize: 16,
        textSha256: createHash('sha256').update(nops).digest('hex'),
        ind: { section: '.ind.libx', addr: '0x402000', size: 16, used: 0 },
        sites: [],
      },
    ],
  };
  edit(r);
  return JSON.stringify(r);
}

const rewritten = (rec: string, indData?: Buffer<ArrayBufferLike>): TinyElf => ({
  sections: [text, ind(indData), { name: '.spacer.rewrite', type: SHT_PROGBITS, data: rec }],
  segments: [load],
});

const plan = (edit: (u: any) => void): string => {
  const u: any = {
    name: 'libx',
    path: 'libx.o',
    variant: 'v1',
    shared: false,
    slots: {
      ind: { section: '.ind.libx', addr: '0x402000', size: '0x10', bytes: 16 },
      text: { section: '.text.libx', addr: '0x401000', size: '0x10', bytes: 16 },
    },
  };
  edit(u);
  return (
    JSON.stringify(
      {
        spacer: 1,
        image: 'x',
        map: 'map.json',
        script: 'x.lds',
        rewrite: 'external',
        notes: [],
        ulibs: [u],
      },
      null,
      2,
    ) + '\n'
  );
};

interface Def extends Reproducer {
  elf?: TinyElf | (() => Buffer);
  text?: string;
}

const DEFS: Def[] = [
  // Controls: well-formed tiny inputs that must stay clean (they prove the reproducers below
  // differ from a valid input in one field only).
  {
    file: 'control-plain.elf',
    elf: { sections: [text, ind()], segments: [load] },
    expect: 'success or a clear error in every step',
    finding: 'none (control)',
    found: '-',
  },
  {
    file: 'control-rewritten.elf',
    elf: rewritten(record()),
    expect: 'verify: verified',
    finding: 'none (control)',
    found: '-',
  },
  {
    file: 'control-plan.lds.json',
    text: plan(() => {}),
    expect: 'a valid link plan',
    finding: 'none (control)',
    found: '-',
  },
  {
    file: 'control-plain-with-plan.elf',
    plan: 'control-plan.lds.json',
    elf: { sections: [text, ind()], segments: [load] },
    expect: 'rewrite: a clear error (no relocations)',
    finding: 'none (control)',
    found: '-',
  },

  // The ELF reader (helper/elf.ts).
  {
    file: 'elf-section-size-2p63.elf',
    elf: {
      sections: [text, { name: '.comment', type: SHT_PROGBITS, data: 'x', size: 2n ** 63n }],
      segments: [load],
    },
    expect:
      "a SpacerError '<file>: truncated ELF file (section 2 ...); rebuild it' (or another clear line)",
    finding:
      "RangeError 'section size 9223372036854775808 is out of range' from num() in ElfFile.readSections (helper/elf.ts), escaping ElfFile.load; verifyImage (via rewrite.ts loadImage) lets it through too",
    found: 'seed 1 cases 1, 203, 240, ... (59 cases)',
  },
  {
    file: 'elf-shstrtab-offset-2p60.elf',
    elf: { sections: [text], segments: [load], shstrtab: { offset: 2n ** 60n } },
    expect: 'a clear SpacerError (the section name table lies outside the file)',
    finding:
      "RangeError 'value 1152921504606846976 is out of range' from num(strtab.offset) in ElfFile.cstr (helper/elf.ts), called from ElfFile.readSections for section 0 before the name table's own bounds check",
    found: 'seed 1 cases 127, 1298, 1307, ... (11 cases)',
  },
  {
    file: 'elf-shstrtab-size-2p60.elf',
    elf: { sections: [text], segments: [load], shstrtab: { size: 2n ** 60n } },
    expect: 'a clear SpacerError (the section name table lies outside the file)',
    finding:
      "RangeError 'value ... is out of range' from num(strtab.offset + strtab.size) in ElfFile.cstr (helper/elf.ts)",
    found: 'seed 1 cases 351, 4923',
  },
  {
    file: 'elf-shstrtab-past-eof.elf',
    elf: () => {
      // The name table starts at the end of the file and claims 2^52 bytes: every byte past the
      // end reads as undefined (not 0), so the name of section 0 is scanned for 2^52 steps.
      const probe = tinyElf64({ sections: [text], segments: [load] });
      return tinyElf64({
        sections: [text],
        segments: [load],
        shstrtab: { offset: BigInt(probe.length), size: 2n ** 52n },
      });
    },
    expect: 'a clear SpacerError at once (the section name table lies outside the file)',
    finding:
      'HANG: ElfFile.cstr (helper/elf.ts) scans [strtab.offset, strtab.offset + size) byte by byte without stopping at the end of the file (data[i] is undefined past it, never 0); it runs for section 0 before the table is bounds-checked',
    found: 'not hit by the 5000-case run; found reading ElfFile.cstr after cases 127 and 351',
  },

  {
    file: 'elf-name-table-binary-name.elf',
    // e_shstrndx names a section whose bytes start with an ANSI escape: that becomes the table's
    // own name, and the error about a name offset past its end prints it.
    elf: {
      sections: [
        { name: '.data', type: SHT_PROGBITS, data: '\x1b[31mX\x00', nameOff: 0 },
        { name: '.comment', type: SHT_PROGBITS, data: 'x', nameOff: 0x100 },
      ],
      segments: [],
      shstrndx: 1,
    },
    expect:
      "a SpacerError in printable text: '<file>: string offset 256 outside the section name table; not a valid ELF file'",
    finding:
      'SpacerError with raw control bytes (here an ANSI escape sequence) from ElfFile.cstr (helper/elf.ts): the message names the string table by its own name, read from the file unchecked',
    found: 'seed 1 case 4939 (e_shstrndx 0x58 -> 0x2c)',
  },

  // The page report (helper/pages.ts, helper/report.ts).
  {
    file: 'report-load-memsz-2p63.elf',
    elf: { sections: [text], segments: [{ ...load, memsz: 2n ** 63n }] },
    expect: 'analyze: a clear SpacerError (segment size out of range; not a valid image)',
    finding:
      "RangeError 'segment size 9223372036854775808 is out of range' from num(p.memsz) in segsOf (helper/pages.ts), via scanPages in analyzeImages (helper/report.ts); report.ts loadImage only wraps errors of ElfFile.load",
    found: 'seed 1 cases 639, 683, 775, ... (12 cases)',
  },
  {
    file: 'report-bss-ulib-2p62.elf',
    elf: {
      sections: [
        text,
        {
          name: '.bss.libx',
          type: SHT_NOBITS,
          flags: SHF_ALLOC | 1n,
          addr: 0x600000n,
          size: 2n ** 62n,
        },
      ],
      segments: [load],
    },
    expect:
      'analyze: a clear SpacerError at once (a µlib section larger than the address space the image loads), or a report',
    finding:
      'HANG: attribute() in helper/report.ts loops over every page of each µlib section (for p = r[0]; p < r[1]; p++ with inRanges) — 2^50 iterations for a NOBITS .bss.<µlib> of 2^62 bytes; NOBITS sizes are never checked by ElfFile',
    found: 'seed 1 cases 1390, 1721, 4170 (hang after 20 s)',
  },
  {
    file: 'report-plan-json-multiline.elf',
    elf: {
      sections: [text, { name: '.spacer.plan', type: SHT_PROGBITS, data: '{"spacer":\n x}' }],
      segments: [load],
    },
    expect: "analyze: one line '<file>: .spacer.plan is not valid JSON (...); run ...'",
    finding:
      "multi-line SpacerError from readImagePlan (helper/report.ts): it embeds JSON.parse's message, which quotes the input around the error, newlines included",
    found: 'same pattern as seed 1 cases 580, 1181 (readPlan); found by reading readImagePlan',
  },

  {
    file: 'report-plan-deflated-corrupt.elf',
    // A deflated plan whose zlib checksum is wrong: inflate fails, the bytes are read as text.
    elf: {
      sections: [
        text,
        {
          name: '.spacer.plan',
          type: SHT_PROGBITS,
          data: Buffer.from('789c33f4ccb7b788d4aa06000a1e02a0', 'hex'),
        },
      ],
      segments: [load],
    },
    expect:
      "analyze: one printable line '<file>: .spacer.plan is not valid JSON (...)' or one that says the plan is not valid zlib data",
    finding:
      "multi-line SpacerError with raw binary (NUL, control bytes) from readImagePlan (helper/report.ts): planSectionText (helper/finish.ts) falls back to reading the zlib bytes as text, and JSON.parse's message quotes them",
    found: 'seed 1 cases 93, 192, 196, 632, ... (48 cases: zlib bytes of .spacer.plan corrupted)',
  },

  // The rewrite record and the verifier (helper/rewrite.ts readRecord, helper/verify.ts
  // verifyRecord).
  {
    file: 'record-json-multiline.elf',
    elf: rewritten('{"spacer_rewrite":\n x}'),
    expect: "verify and rewrite: one line '<file>: .spacer.rewrite is corrupt (...); relink ...'",
    finding:
      "multi-line SpacerError from readRecord (helper/rewrite.ts): JSON.parse's message quotes the input around the error, newlines included (verifyImage returns it as a problem, rewriteImage throws it)",
    found:
      'seed 1 cases 184, 1493 (.spacer.rewrite pointed at binary: control bytes in the message); newlines: same pattern as cases 580, 1181 (readPlan)',
  },
  {
    file: 'record-no-plan.elf',
    elf: rewritten(
      record((r) => {
        delete r.plan;
      }),
    ),
    expect:
      "verify: a clear problem or SpacerError ('.spacer.rewrite is not a lib-spacer rewrite record; ...')",
    finding:
      'TypeError "Cannot read properties of undefined (reading \'ulibs\')" in planFromRecord (helper/rewrite.ts) from verifyRecord: readRecord only checks spacer_rewrite, mode and that ulibs is an array',
    found: 'same cause as the verifyRecord findings below',
  },
  {
    file: 'record-site-address-not-hex.elf',
    elf: rewritten(
      record((r) => {
        r.ulibs[0].sites = [{ a: 'zz', o: '90', k: 'stub', e: '0x402000', t: '0x0' }];
      }),
    ),
    expect:
      "verify: a clear problem or SpacerError ('.spacer.rewrite is not a lib-spacer rewrite record; ...')",
    finding:
      "SyntaxError 'Cannot convert zz to a BigInt' at BigInt(s.a) in verifyRecord (helper/verify.ts); also BigInt(s.e), BigInt(ru.ind.size) ... on any non-hex string",
    found: 'seed 1 cases 759, 1284, 2637, 3840, 4379 (hex strings with a corrupted byte)',
  },
  {
    file: 'record-site-no-bytes.elf',
    elf: rewritten(
      record((r) => {
        r.ulibs[0].sites = [{ a: '0x401000', k: 'stub', e: '0x402000', t: '0x0' }];
      }),
    ),
    expect: 'verify: a clear problem or SpacerError',
    finding:
      "TypeError 'The first argument must be of type string or an instance of Buffer ... Received undefined' at Buffer.from(s.o, 'hex') in verifyRecord (helper/verify.ts)",
    found: 'seed 1 cases 933, 2617',
  },
  {
    file: 'record-site-no-entry.elf',
    elf: rewritten(
      record((r) => {
        r.ulibs[0].sites = [{ a: '0x401000', o: '90', k: 'stub', t: '0x0' }];
        r.ulibs[0].ind.used = 16;
      }),
    ),
    expect: 'verify: a clear problem or SpacerError',
    finding:
      "TypeError 'Cannot convert undefined to a BigInt' at BigInt(s.e) in verifyRecord (helper/verify.ts)",
    found: 'seed 1 cases 3266, 4334, 4387, 4421',
  },
  {
    file: 'record-ind-null.elf',
    elf: rewritten(
      record((r) => {
        r.ulibs[0].ind = null;
      }),
    ),
    expect: 'verify: a clear problem or SpacerError',
    finding:
      'TypeError "Cannot read properties of null (reading \'section\')" in verifyRecord (helper/verify.ts)',
    found: 'seed 1 case 2770',
  },
  {
    file: 'record-ind-size-text.elf',
    elf: rewritten(
      record((r) => {
        r.ulibs[0].ind.size = '../../etc';
      }),
    ),
    expect: 'verify: a clear problem or SpacerError',
    finding:
      "SyntaxError 'Cannot convert ../../etc to a BigInt' at BigInt(ru.ind.size) in verifyRecord (helper/verify.ts)",
    found: 'seed 1 cases 2141, 3059 (size deleted: TypeError)',
  },
  {
    file: 'record-site-no-kind.elf',
    elf: rewritten(
      record((r) => {
        r.ulibs[0].sites = [{ a: '0x401000', o: '90', e: '0x402000', t: '0x0' }];
        r.ulibs[0].ind.used = 16;
      }),
    ),
    expect: 'verify: a problem that names the bad field, or a clear SpacerError',
    finding:
      "unclear verify problem 'libx: site 0x401000 (undefined): unknown kind' from verifyRecord (helper/verify.ts)",
    found: 'seed 1 case 3278',
  },
  {
    file: 'record-ulib-fields-missing.elf',
    elf: rewritten(
      record((r) => {
        r.ulibs[0] = { name: 'libx' };
      }),
    ),
    expect: 'verify: a problem that names the bad field, or a clear SpacerError',
    finding:
      "unclear verify problem 'libx: undefined is missing or moved (recorded at undefined, undefined bytes)' from verifyRecord (helper/verify.ts)",
    found: 'seed 1 case 3479 (ind -> [[]]), seed t2 case 13',
  },
  {
    file: 'record-used-newline.elf',
    elf: rewritten(
      record((r) => {
        r.ulibs[0].ind.used = '\n';
      }),
      Buffer.from([0xe9, ...Buffer.alloc(15, 0xcc)]),
    ),
    expect: 'verify: one-line problems (or a clear SpacerError)',
    finding:
      "multi-line verify problem 'libx: .ind.libx: bytes after the \\n used ones are not 0xCC' from verifyRecord (helper/verify.ts): record strings go into problems unchecked",
    found: 'seed 1 case 4499',
  },

  // The link plan (helper/finish.ts readPlan, rewritePlan), as `spacer finish --plan` reads it.
  {
    file: 'plan-json-multiline.lds.json',
    text: '{\n  "spacer":\n  x\n}\n',
    expect: "one line '<plan>: cannot read the link plan (...); run 'spacer link' again'",
    finding:
      "multi-line SpacerError from readPlan (helper/finish.ts): JSON.parse's message quotes the pretty-printed plan around the error, newlines included",
    found: 'seed 1 cases 580, 1181',
  },
  {
    file: 'plan-slots-null.lds.json',
    text: plan((u) => {
      u.slots = null;
    }),
    expect: "a clear SpacerError ('<plan>: not a lib-spacer link plan; ...')",
    finding:
      'TypeError "Cannot read properties of null (reading \'text\')" in rewritePlan (helper/finish.ts): readPlan checks only spacer and that ulibs is an array',
    found: 'seed 1 cases 70, 1978, 2223, 2665, 2935, 3701 (ulibs[i] or slots not an object)',
  },
  {
    file: 'plan-ind-empty.lds.json',
    text: plan((u) => {
      u.slots.ind = {};
    }),
    expect: 'a clear SpacerError naming the plan',
    finding:
      "TypeError 'Cannot convert undefined to a BigInt' at BigInt(u.slots.ind.addr) in rewritePlan (helper/finish.ts)",
    found: 'seed 1 cases 108, 618, 855, 3060, 3942; 3829 (a slot null)',
  },
  {
    file: 'plan-ind-addr-name.lds.json',
    text: plan((u) => {
      u.slots.ind.addr = '.ind.libx';
    }),
    expect: 'a clear SpacerError naming the plan',
    finding: "SyntaxError 'Cannot convert .ind.libx to a BigInt' in rewritePlan (helper/finish.ts)",
    found: 'seed 1 cases 490, 1881, 2556',
  },
];

// Plan reproducers run with the plain control image.
for (const d of DEFS) if (d.text && d.file.startsWith('plan-')) d.plan = d.file;

/** The reproducers, as the manifest lists them (plan-file entries run on control-plain.elf). */
export function reproducers(): Reproducer[] {
  return DEFS.filter((d) => d.elf || d.file.startsWith('plan-')).map((d) => ({
    file: d.elf ? d.file : 'control-plain.elf',
    ...(d.plan ? { plan: d.plan } : {}),
    expect: d.expect,
    finding: d.finding,
    found: d.found,
  }));
}

/** The bytes of every fixture file, by name. */
export function reproducerFiles(): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const d of DEFS) {
    if (d.elf) out.set(d.file, typeof d.elf === 'function' ? d.elf() : tinyElf64(d.elf));
    else if (d.text !== undefined) out.set(d.file, Buffer.from(d.text, 'latin1'));
  }
  out.set('reproducers.json', Buffer.from(JSON.stringify(reproducers(), null, 2) + '\n'));
  return out;
}

export function writeReproducers(dir: string): string[] {
  mkdirSync(dir, { recursive: true });
  const files = reproducerFiles();
  for (const [name, data] of files) writeFileSync(join(dir, name), data);
  return [...files.keys()];
}
