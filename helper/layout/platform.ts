// The µlibs lib-spacer knows by Unikraft's names: the platform, built per app around the boot code
// (and how its code stays the same in every app), and the application's own library.

/** The application's own library (Unikraft's `app<name>`), the µlib most likely to change. */
export const isApp = (name: string) => name.startsWith('app');

/** Unikraft's platform µlib (`libkvmplat`, `libxenplat`, ...). */
export function isPlatform(name: string): boolean {
  // Asked per µlib and symbol by the finish's passes: answered once per name.
  let v = platformNames.get(name);
  if (v === undefined) platformNames.set(name, (v = /^lib[a-z0-9]*plat$/.test(name)));
  return v;
}
const platformNames = new Map<string, boolean>();

/**
 * Does this µlib send the absolute addresses of its own read-only data, data and bss through its
 * table, in every layout? The platform does: Unikraft builds it per app (its setup code holds the
 * image's name, `CONFIG_UK_NAME`), so the strings merged after the name sit at other offsets in
 * each app, and every `mov reg, imm32` loading one would make its code pages differ.
 */
export function sendsOwnAbs(name: string): boolean {
  return isPlatform(name);
}
