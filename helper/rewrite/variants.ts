// After each link of the platform (both layouts; in ASLR mode it keeps its place): its code,
// relocation fields masked, compared with its first variant's, so the instructions that differ
// though no relocation names them (the name's length) are moved to its table from the next link
// on (layout/moved.ts).
import { type ElfFile } from '../elf.js';
import { sendsOwnAbs } from '../layout/aslr.js';
import { noteVariant, type MovedInsn } from '../layout/moved.js';
import { type Plan } from '../plan.js';
import { findInsn } from '../x86/decode.js';
import { codeExtents, decodeCode } from '../x86/extents.js';
import { maskFields } from './cache.js';

/** Notes the platform's code of this freshly linked image; returns what it added, by µlib. */
export function noteVariants(elf: ElfFile, plan: Plan): Map<string, MovedInsn[]> {
  const out = new Map<string, MovedInsn[]>();
  if (plan.rewrite !== 'external' && plan.rewrite !== 'aslr') return out;
  for (const u of plan.ulibs) {
    const slot = u.slots.text;
    if (!sendsOwnAbs(u.name) || !slot) continue;
    const text = elf.section(slot.section);
    // Keyed by the measured size, as the link reads it; a section of another size is not compared.
    if (!text || Number(text.size) !== slot.bytes || !slot.bytes) continue;
    const orig = elf.contents(text),
      lo = text.addr;
    const fields = elf.relocationsFor(text).map((r) => ({ at: r.offset, type: r.type }));
    const masked = maskFields(Buffer.from(orig), lo, fields);
    const added = noteVariant(plan.map, u.name, masked, () => {
      const d = decodeCode(
        orig,
        lo,
        codeExtents(elf.symbols(), text.index, lo, lo + text.size),
        fields,
      );
      return (off: number) => {
        const i = d.insns[findInsn(d.insns, lo + BigInt(off))];
        if (!i || i.invalid || !d.code.isCode(i.ip) || lo + BigInt(off) >= i.ip + BigInt(i.len))
          return undefined;
        return [Number(i.ip - lo), i.len];
      };
    });
    if (added.length) out.set(u.name, added);
  }
  return out;
}
