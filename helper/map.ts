// The workspace map, by its old name, for the modules that still import it from here: the map
// itself lives in layout/ (map-types.ts, map-file.ts, map-check.ts, map-lock.ts), atomic writes
// in util/files.ts.
export { SLOT_KINDS, type Kind, type SlotKind } from './layout/map-types.js';
export { writeFileAtomic } from './util/files.js';
