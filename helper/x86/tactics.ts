// Tactics: how one site in a µlib's code is changed in place so that its bytes no longer depend on
// anything outside the µlib. Every tactic keeps the site's length, so no other byte of the code
// moves, and only ever writes the site's own bytes.
import { type SiteKind } from './classify.js';
import { type Insn } from './decode.js';
import { TableError, jmpRel32, rel32 } from './table.js';

/**
 * Patches the site `i` inside `code` (the bytes of a section loaded at `base`) to use the table
 * entry at `entry`:
 * - stub: the branch's rel32 now reaches the stub (call/jmp/jcc and its return address unchanged);
 * - got: `lea reg, [rip+X]` (8D) becomes `mov reg, [rip+G]` (8B), G the slot holding X;
 * - trampoline / callind: `jmp entry` and int3 (0xCC) over the rest of the instruction.
 */
export function patchSite(
  code: Buffer,
  base: bigint,
  i: Insn,
  kind: SiteKind,
  entry: bigint,
  what: string,
): void {
  const off = Number(i.ip - base);
  const end = i.ip + BigInt(i.len);
  const w = `${what}: site 0x${i.ip.toString(16)}`;
  if (off < 0 || off + i.len > code.length) throw new TableError(`${w}: outside its section`);
  switch (kind) {
    case 'stub':
      if (!i.nearBranch || i.immSize !== 4) throw new TableError(`${w}: not a rel32 branch`);
      code.writeInt32LE(rel32(end, entry, w), off + i.immOff);
      return;
    case 'got': {
      // RIP-relative operands never have a SIB byte: [REX] 8D ModRM disp32.
      const op = off + i.dispOff - 2;
      if (i.dispSize !== 4 || code[op] !== 0x8d)
        throw new TableError(`${w}: not a lea with a RIP-relative operand`);
      code[op] = 0x8b;
      code.writeInt32LE(rel32(end, entry, w), off + i.dispOff);
      return;
    }
    case 'trampoline':
    case 'callind':
      if (i.len < 5) throw new TableError(`${w}: ${i.len} bytes, too short for a jump`);
      jmpRel32(i.ip, entry, w).copy(code, off);
      code.fill(0xcc, off + 5, off + i.len);
      return;
  }
}
