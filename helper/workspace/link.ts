/**
 * Final link of an example image, the way Unikraft's plat/kvm/Linker.uk links
 * a kvm x86_64 image, then the bootable multiboot file for qemu -kernel.
 */
import { mkdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { bootableImage } from '../pipeline.js';
import type { AppSpec } from './apps.js';
import { workspaceRoot } from './apps.js';
import { type CompiledWorkspace, objectsFor } from './compile.js';

/** 32-bit multiboot entry point of kvmplat (example/ulibs/kvmplat/multiboot.S). */
export const ENTRY_SYMBOL = '_multiboot_entry';

export interface PlatformScripts {
  /** The platform's default script (passed with -Wl,-dT). */
  defaultLds: string;
  /** Extension scripts (each passed with -Wl,-T), in order. */
  extraLds: string[];
}

/** Linker scripts of the example kvm platform (absolute paths). */
export function platformScripts(): PlatformScripts {
  const dir = path.join(workspaceRoot(), 'platform');
  return {
    defaultLds: path.join(dir, 'link64.lds'),
    extraLds: ['libinfo.lds', 'earlytab.lds', 'bootinfo.lds'].map((f) => path.join(dir, f)),
  };
}

export interface LinkRequest {
  /** Objects in link order (see objectsFor). */
  objects: string[];
  /** Default linker script (-Wl,-dT); may be a generated one. */
  defaultLds: string;
  /** Extension scripts (-Wl,-T each). */
  extraLds: string[];
  /** Output path prefix: writes <out>.dbg and <out>.elf. */
  out: string;
  /** Entry symbol, default ENTRY_SYMBOL. */
  entry?: string;
  /** Extra arguments for the gcc link command (before -o). */
  extraArgs?: string[];
}

export interface LinkedImage {
  /** ELF64 image with symbols and debug info (Unikraft's <name>_qemu-x86_64.dbg). */
  dbg: string;
  /** Stripped ELF32 multiboot image for qemu -kernel. */
  elf: string;
}

/** The gcc command line of the final link, as Linker.uk builds it. */
export function linkCommand(req: LinkRequest, output: string): string[] {
  return [
    '-nostdlib',
    '-no-pie',
    '-Wl,--build-id=none',
    '-Wl,-m,elf_x86_64',
    `-Wl,--entry=${req.entry ?? ENTRY_SYMBOL}`,
    ...req.objects,
    `-Wl,-dT,${req.defaultLds}`,
    ...req.extraLds.map((s) => `-Wl,-T,${s}`),
    ...(req.extraArgs ?? []),
    '-o',
    output,
  ];
}

/**
 * Links <out>.dbg (ELF64) with gcc exactly like Unikraft's kvm link, then
 * strips it and rewraps it as ELF32 (objcopy -O elf32-i386) into <out>.elf,
 * which qemu's multiboot loader accepts (it refuses ELF64). Both files are
 * written atomically (temporary file + rename).
 */
export async function linkImage(req: LinkRequest): Promise<LinkedImage> {
  const out = path.resolve(req.out);
  await mkdir(path.dirname(out), { recursive: true });
  const dbg = `${out}.dbg`;
  const elf = `${out}.elf`;
  const dbgTmp = `${dbg}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  try {
    await execa('gcc', linkCommand(req, dbgTmp));
    await rename(dbgTmp, dbg);
  } finally {
    await rm(dbgTmp, { force: true });
  }
  await bootableImage(dbg, elf);
  return { dbg, elf };
}

/** Links one application of the workspace into <outDir>/<app>.{dbg,elf}. */
export async function linkApp(
  app: AppSpec,
  compiled: CompiledWorkspace,
  outDir: string,
  scripts: PlatformScripts = platformScripts(),
): Promise<LinkedImage> {
  return linkImage({
    objects: objectsFor(app, compiled),
    defaultLds: scripts.defaultLds,
    extraLds: scripts.extraLds,
    out: path.join(outDir, app.name),
  });
}
