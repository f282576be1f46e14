// Where each field of the ELF records lies, for ELF64 and ELF32: one table that the reader
// (elf.ts), the Firecracker loader model (image/firecracker.ts) and the fuzzer (fuzz/fields.ts)
// share, instead of offsets written out in each.

/** One field of a record: its ELF name (`sh_size`), offset and width in bytes. */
export interface FieldDef {
  name: string;
  /** The name without its prefix (`size`), as readFields and writeFields name it. */
  key: string;
  off: number;
  width: number;
  /** Address-sized (8 bytes in ELF64, 4 in ELF32): read as a bigint in both. */
  addr: boolean;
}

/** A record's fields in each class. */
export type RecordLayout = Readonly<Record<32 | 64, FieldDef[]>>;

/**
 * Fields in file order as `name:width` words; width `A` is address-sized, a name `-` is a gap
 * nobody reads.
 */
function fields(spec: string, addrSize: number): FieldDef[] {
  const out: FieldDef[] = [];
  let off = 0;
  for (const word of spec.split(/\s+/).filter(Boolean)) {
    const [name, w] = word.split(':');
    const width = w === 'A' ? addrSize : Number(w);
    if (name !== '-')
      out.push({ name, key: name.slice(name.indexOf('_') + 1), off, width, addr: w === 'A' });
    off += width;
  }
  return out;
}

const layout = (spec64: string, spec32 = spec64): RecordLayout => ({
  64: fields(spec64, 8),
  32: fields(spec32, 4),
});

/** The ELF header (e_ident's class and data bytes, then the fields after e_ident). */
export const EHDR = layout(
  '-:4 EI_CLASS:1 EI_DATA:1 -:10 e_type:2 e_machine:2 -:4 e_entry:A e_phoff:A e_shoff:A ' +
    'e_flags:4 e_ehsize:2 e_phentsize:2 e_phnum:2 e_shentsize:2 e_shnum:2 e_shstrndx:2',
);
export const SHDR = layout(
  'sh_name:4 sh_type:4 sh_flags:A sh_addr:A sh_offset:A sh_size:A sh_link:4 sh_info:4 ' +
    'sh_addralign:A sh_entsize:A',
);
/** Program headers: p_flags moves to keep ELF64's 8-byte fields aligned. */
export const PHDR = layout(
  'p_type:4 p_flags:4 p_offset:A p_vaddr:A p_paddr:A p_filesz:A p_memsz:A p_align:A',
  'p_type:4 p_offset:A p_vaddr:A p_paddr:A p_filesz:A p_memsz:A p_flags:4 p_align:A',
);
export const SYM = layout(
  'st_name:4 st_info:1 st_other:1 st_shndx:2 st_value:A st_size:A',
  'st_name:4 st_value:A st_size:A st_info:1 st_other:1 st_shndx:2',
);

/**
 * The fields of the record at `at`, named without their prefix (`sh_size` → `size`):
 * address-sized ones as bigint, the others as numbers. The caller checks the bounds and names
 * the type `T` the fields make.
 */
export function readFields<T>(d: Buffer, at: number, defs: FieldDef[]): T {
  const out: Record<string, number | bigint> = {};
  for (let i = 0; i < defs.length; i++) {
    const f = defs[i],
      o = at + f.off;
    out[f.key] =
      f.width === 8
        ? d.readBigUInt64LE(o)
        : f.addr
          ? BigInt(d.readUInt32LE(o))
          : f.width === 4
            ? d.readUInt32LE(o)
            : f.width === 2
              ? d.readUInt16LE(o)
              : d[o];
  }
  return out as T;
}

/**
 * Writes the given fields (named without their prefix, as readFields names them) of the record at
 * `at`; fields not given keep their bytes.
 */
export function writeFields(
  d: Buffer,
  at: number,
  defs: FieldDef[],
  values: Readonly<Record<string, number | bigint>>,
): void {
  for (const f of defs) {
    const v = values[f.key];
    if (v === undefined) continue;
    const o = at + f.off;
    if (f.width === 8) d.writeBigUInt64LE(BigInt(v), o);
    else if (f.width === 4) d.writeUInt32LE(Number(v), o);
    else if (f.width === 2) d.writeUInt16LE(Number(v), o);
    else d[o] = Number(v);
  }
}
