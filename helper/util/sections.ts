// The names of a µlib's output sections in the aligned script, built and read in one place:
// `.text.<ulib>`, `.rodata.<ulib>`, `.data.<ulib>`, `.bss.<ulib>` (its slots), `.ind.<ulib>` (its
// indirection table) and `.ptr.<ulib>` (its ASLR pointer area).

export type SectionKind = 'text' | 'rodata' | 'data' | 'bss' | 'ind' | 'ptr';
export const SECTION_KINDS: readonly SectionKind[] = [
  'text',
  'rodata',
  'data',
  'bss',
  'ind',
  'ptr',
];

/** The output section of `ulib`'s `kind`. */
export function outputName(kind: SectionKind, ulib: string): string {
  return `.${kind}.${ulib}`;
}

/** The µlib and kind of an output section name, or undefined for any other section. */
export function parseOutputName(name: string): { kind: SectionKind; ulib: string } | undefined {
  const m = /^\.(text|rodata|data|bss|ind|ptr)\.(.+)$/.exec(name);
  return m ? { kind: m[1] as SectionKind, ulib: m[2] } : undefined;
}
