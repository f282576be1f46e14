/** Minimal program-header reader (ELF32 and ELF64, little endian) for checks. */
import { readFileSync } from 'node:fs';

export const PT_LOAD = 1;
export const PT_TLS = 7;
export const PT_GNU_STACK = 0x6474e551;

export interface ProgramHeader {
  type: number;
  flags: number;
  offset: number;
  vaddr: number;
  paddr: number;
  filesz: number;
  memsz: number;
  align: number;
}

export interface ElfSummary {
  elfClass: 32 | 64;
  machine: number;
  entry: number;
  phdrs: ProgramHeader[];
}

export function readElfSummary(file: string | Buffer): ElfSummary {
  const b = typeof file === 'string' ? readFileSync(file) : file;
  if (b.readUInt32BE(0) !== 0x7f454c46) throw new Error('not an ELF file');
  if (b[5] !== 1) throw new Error('big-endian ELF not supported');
  const is64 = b[4] === 2;
  const machine = b.readUInt16LE(18);
  const entry = is64 ? Number(b.readBigUInt64LE(24)) : b.readUInt32LE(24);
  const phoff = is64 ? Number(b.readBigUInt64LE(32)) : b.readUInt32LE(28);
  const phentsize = b.readUInt16LE(is64 ? 54 : 42);
  const phnum = b.readUInt16LE(is64 ? 56 : 44);
  const phdrs: ProgramHeader[] = [];
  for (let i = 0; i < phnum; i++) {
    const o = phoff + i * phentsize;
    if (is64) {
      phdrs.push({
        type: b.readUInt32LE(o),
        flags: b.readUInt32LE(o + 4),
        offset: Number(b.readBigUInt64LE(o + 8)),
        vaddr: Number(b.readBigUInt64LE(o + 16)),
        paddr: Number(b.readBigUInt64LE(o + 24)),
        filesz: Number(b.readBigUInt64LE(o + 32)),
        memsz: Number(b.readBigUInt64LE(o + 40)),
        align: Number(b.readBigUInt64LE(o + 48)),
      });
    } else {
      phdrs.push({
        type: b.readUInt32LE(o),
        offset: b.readUInt32LE(o + 4),
        vaddr: b.readUInt32LE(o + 8),
        paddr: b.readUInt32LE(o + 12),
        filesz: b.readUInt32LE(o + 16),
        memsz: b.readUInt32LE(o + 20),
        flags: b.readUInt32LE(o + 24),
        align: b.readUInt32LE(o + 28),
      });
    }
  }
  return { elfClass: is64 ? 64 : 32, machine, entry, phdrs };
}
