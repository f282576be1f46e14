// The example's build step after the link that Unikraft's build has too: the platform's boot
// information record (`.uk_bootinfo`) gets one memory region per loaded segment of the final
// image, written into the file (Unikraft's kvm build does it with its own script, from the program
// headers). Its page is data like any other: two images with different segment lists differ
// there, as they do on real Unikraft, so the demo and the bench see it.
import { ElfFile, SHT_NOBITS } from '../elf.js';
import { SpacerError } from '../errors.js';
import { writeFileAtomic } from '../util/files.js';

/** `struct ukplat_bootinfo` of example/include/uk/plat.h. */
const NR_REGIONS = 24,
  MAX_REGIONS = 28,
  REGIONS = 96,
  REGION = 24;
/** UKPLAT_MEMRF_KERNEL. */
const KERNEL = 0x2;
const PAGE = 0x1000n;

/** Writes the image's loaded segments into its boot record as kernel regions, in place. */
export function writeBootInfo(path: string): void {
  const elf = ElfFile.load(path);
  const sec = elf.section('.uk_bootinfo');
  if (!sec || sec.type === SHT_NOBITS)
    throw new SpacerError(`${path}: no .uk_bootinfo with file bytes to write the regions into`);
  const data = Buffer.from(elf.data);
  const at = Number(sec.offset);
  const max = data.readUInt32LE(at + MAX_REGIONS);
  const loads = elf.loads.filter((p) => p.memsz > 0n && p.vaddr >= 0x100000n);
  // The platform adds its own two at boot (the image as a whole, the heap).
  if (loads.length + 2 > max || REGIONS + max * REGION > Number(sec.size))
    throw new SpacerError(
      `${path}: ${loads.length} loaded segments, the boot record holds ${max - 2}; raise UKPLAT_MEMREGION_MAX in example/include/uk/plat.h`,
    );
  loads.forEach((p, i) => {
    const r = at + REGIONS + i * REGION;
    data.writeBigUInt64LE(p.vaddr, r);
    data.writeBigUInt64LE(((p.memsz + PAGE - 1n) / PAGE) * PAGE, r + 8);
    data.writeUInt32LE(KERNEL, r + 16);
  });
  data.writeUInt32LE(loads.length, at + NR_REGIONS);
  writeFileAtomic(path, data, 'product');
}
