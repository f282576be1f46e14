// Recording an image's link in the map: which variants it now uses (and no longer uses), after
// the checks that stop a link from taking another build's image name or platform.
import { basename } from 'node:path';
import { SpacerError } from '../errors.js';
import { hex } from '../util/units.js';
import type { AllocRequest } from './allocate.js';
import type { SpacerMap, VariantEntry } from './map-types.js';

/**
 * One image name, one build: a link from other app or build folders than the image's last link
 * would silently take over its map entry (two helloworld apps are both `helloworld_qemu-x86_64`
 * unless SPACER_IMAGE is set).
 */
function checkOrigin(m: SpacerMap, mapPath: string, req: AllocRequest): void {
  const was = m.images[req.image]?.origin,
    now = req.origin;
  if (!was || !now || (was.app === now.app && was.build === now.build)) return;
  const suggest = basename(now.app) || 'app';
  throw new SpacerError(
    `${mapPath}: image name ${req.image} is already taken by the build in ${was.build} (app ${was.app}), ` +
      `and this one is in ${now.build} (app ${now.app}); set SPACER_IMAGE to a name of its own (e.g. SPACER_IMAGE=${suggest}_${req.image}), ` +
      `or, if the other build is gone, run 'spacer map gc --map ${mapPath} ${req.image}' first`,
  );
}

/** Records the image's variants in the map (checks, new-variant notes, image membership). */
export function allocateRecord(
  m: SpacerMap,
  mapPath: string,
  req: AllocRequest,
): { notes: string[]; entries: { name: string; v: VariantEntry; variant: string }[] } {
  const notes: string[] = [];
  if (m.text_base !== req.textBase) {
    throw new SpacerError(
      `${mapPath}: the map was made for text at ${hex(m.text_base)} but this platform script puts it at ${hex(req.textBase)}; use another map (CONFIG_SPACER_MAP) for this platform`,
    );
  }
  if (req.head > m.head) {
    throw new SpacerError(
      `${mapPath}: the platform boot head (${req.head} bytes) outgrew the ${m.head} bytes the map reserves; start a new map (move this one away) and relink every app`,
    );
  }
  const seen = new Set<string>();
  for (const u of req.ulibs) {
    if (seen.has(u.name))
      throw new SpacerError(
        `${mapPath}: two objects named ${u.name}.o in one link; µlib names must be unique`,
      );
    seen.add(u.name);
  }
  checkOrigin(m, mapPath, req);
  // The image now uses these variants, and no longer the ones its previous link used.
  const before = m.images[req.image]?.ulibs ?? {};
  for (const [name, v] of Object.entries(before)) {
    const e = m.ulibs[name]?.variants[v];
    if (e && req.ulibs.every((u) => u.name !== name || u.variant !== v))
      e.images = e.images.filter((i) => i !== req.image);
  }
  const entries = req.ulibs.map((u) => {
    const lib = (m.ulibs[u.name] ??= { variants: {} });
    let e = lib.variants[u.variant];
    if (!e) {
      // How many: with a thousand apps, every app's own variant is one of them (and a link's view
      // of the map loads none of the others).
      const others =
        Object.values(lib.variants).filter((v) => v.images.length).length + (lib.hidden?.used ?? 0);
      if (others)
        notes.push(
          `${u.name}: new variant ${u.variant} (other images use ${others === 1 ? 'another variant' : `${others} other variants`}); it shares no pages with those`,
        );
      e = lib.variants[u.variant] = { sizes: u.sizes, align: u.align, images: [] };
    }
    if (!e.images.includes(req.image)) e.images.push(req.image);
    // Table sizes depend on the rewrite mode: keep the largest seen, and the modes measured.
    if ((u.sizes.ind ?? 0) > (e.sizes.ind ?? 0)) {
      e.sizes.ind = u.sizes.ind;
      e.align.ind = u.align.ind;
    }
    if (u.mode && !(e.modes ??= []).includes(u.mode)) e.modes.push(u.mode);
    if (u.absPtr && u.absPtr > (e.abs_ptr ?? 0)) e.abs_ptr = u.absPtr;
    if (u.codeSig) e.code_sig ??= u.codeSig;
    return { name: u.name, v: e, variant: u.variant };
  });
  const origin = req.origin ?? m.images[req.image]?.origin;
  m.images[req.image] = {
    ulibs: Object.fromEntries(req.ulibs.map((u) => [u.name, u.variant])),
    ...(origin ? { origin } : {}),
  };
  return { notes, entries };
}
