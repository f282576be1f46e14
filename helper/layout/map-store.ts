// The workspace map on disk, split so that a link reads and writes only what it touches (issue
// #14: a relink with 10 000 images in the map costs what it costs with 100):
//   <map>                          the header: the regions, the own-area reserves, how many images
//   <map>.d/ulibs/<µlib>.json      one µlib: its name slot and how many variants it has (in all,
//                                  used by some image, used by exactly one)
//   <map>.d/ulibs/<µlib>/<v>.json  one variant: sizes, alignments, slot, how many images use it
//   <map>.d/images/<image>.json    one image: the variant of each of its µlibs, where it was built
// A link loads the header, its image and the variants it uses and used (loadLinkView); the commands
// that need everything (show, check, relayout, gc) and a link that grows a name slot load it whole
// (loadWhole). Which images use a variant is read from the image files; a variant file keeps only
// the count. Nothing a link reads or writes grows with the workspace: each app has a µlib of its
// own (app<name>), so a header listing every µlib (schema 2) grew by a line per app, and with
// 10 000 apps every relink read, rewrote and journaled 700 KB of it.
//
// Every update lands whole: the changed files go first into one journal (synced, written to a
// temporary name and renamed), then each into place by a rename, the header last. The files are not
// synced one by one: the journal stays, and holds every update since the last checkpoint, until the
// files it landed are synced (a checkpoint: at 32 files, after 30 s, or before a large update).
// One fsync per link instead of one per file; after a power cut the journal still has them.
// Under the lock, each update first checks that the journal's files hold what it says (a crash
// between the journal and its files) and lands what they do not; readers without the lock read
// through it. A map of the single-file form (schema 1) is read whole and written split; a header
// of schema 2 (the µlibs listed in it) gives each µlib its file at the next update.
/* eslint-disable @typescript-eslint/no-explicit-any -- JSON, validated field by field */
import {
  closeSync,
  cpSync,
  existsSync,
  fsyncSync,
  openSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  rmSync,
  rmdirSync,
  statSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { SpacerError } from '../errors.js';
import { writeFileAtomic } from '../util/files.js';
import { PAGE } from '../util/units.js';
import { assertConsistent } from './map-check.js';
import {
  decodeImage,
  decodeOwn,
  decodeRegions,
  decodeSlot,
  decodeVariant,
  decodeWhole,
  extentJson,
  fields,
  headLines,
  imageJson,
  parseHeader,
  perArea,
  variantJson,
  type Fields,
} from './map-file.js';
import {
  MAP_SCHEMA,
  OTHER_IMAGE,
  type Area,
  type Extent,
  type ImageEntry,
  type SpacerMap,
  type UlibEntry,
  type VariantEntry,
} from './map-types.js';

/** Folder of the map's variant and image files. */
export const mapDir = (path: string) => `${path}.d`;
const variantRel = (lib: string, h: string) => `ulibs/${lib}/${h}.json`;
const imageRel = (name: string) => `images/${name}.json`;
const libRel = (lib: string) => `ulibs/${lib}.json`;
const JOURNAL = 'journal.json';
/** The header's key among a state's file texts. */
const CORE = '';
/** Names that become file names: µlibs (object names), variants (hex), images (checked by link). */
const SAFE = /^[\w.+-]+$/;

/** A µlib as its file (schema 2: the header) records it. */
interface CoreUlib {
  slot?: Partial<Record<Area, Extent>>;
  variants: number;
  used: number;
  single: number;
}

/** The map as read: the map (whole, or a link's view), and the text of every file read. */
export interface MapState {
  map: SpacerMap;
  /** Relative path (CORE for the header) → text as read. */
  texts: Map<string, string>;
  /** The µlibs as read (split form): every µlib of a header of schema 2, else those read. */
  core?: Record<string, CoreUlib>;
  /** A header of schema 2, which lists every µlib (the next update gives each its file). */
  coreInHeader?: boolean;
  /** Read from the single-file form (schema 1). */
  whole1?: boolean;
  /** Images the header counts (split form). */
  images?: number;
  /** A link's view: the images it loaded (`map.images` as read; the link adds its own). */
  viewImages?: string[];
  /** A whole load of the split form: counts the header or a variant file has wrong. */
  issues?: string[];
}

interface Journal {
  write: Record<string, string>;
  remove: string[];
  /** When the first update it holds was written (ms since the epoch). */
  since?: number;
}

/** A journal holding this many files, or this old, is checkpointed by the next update. */
const CHECKPOINT_FILES = 32;
const CHECKPOINT_MS = 30_000;

/** Which file a path names now (undefined: none): a rename gives a new inode. */
interface FileId {
  ino: bigint;
  size: bigint;
  mtimeNs: bigint;
}

function fileId(file: string): FileId | undefined {
  const st = statSync(file, { bigint: true, throwIfNoEntry: false });
  return st && { ino: st.ino, size: st.size, mtimeNs: st.mtimeNs };
}

const sameId = (a: FileId | undefined, b: FileId | undefined) =>
  !!a && !!b && a.ino === b.ino && a.size === b.size && a.mtimeNs === b.mtimeNs;

/**
 * The journal this process last read or wrote, by its file's identity: a link reads it four
 * times (finishing, its view, its peek, its commit), and it holds up to 32 files of the map.
 * `landed`: files this process found or made to hold what it says, by identity.
 */
let journalSeen:
  | {
      file: string;
      id: FileId;
      jn: Journal;
      landed: Map<string, FileId>;
      /** This process wrote the journal and landed every file it holds: nothing to check. */
      ours?: boolean;
    }
  | undefined;

/** The journal (undefined: there is none). */
function readJournal(path: string): Journal | undefined {
  const file = join(mapDir(path), JOURNAL);
  const id = fileId(file);
  if (!id) return undefined;
  if (journalSeen?.file === file && sameId(journalSeen.id, id)) return journalSeen.jn;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  try {
    const j = JSON.parse(text);
    if (typeof j?.write === 'object' && j.write !== null && Array.isArray(j.remove)) {
      journalSeen = { file, id, jn: j, landed: new Map() };
      return j;
    }
  } catch {
    /* below */
  }
  throw new SpacerError(
    `${file}: damaged map journal; delete it (the map is then as before the interrupted update) and relink`,
  );
}

/** Reads the map's files, through a journal a crashed update left (readers without the lock). */
class MapFiles {
  private readonly journal: Journal | undefined;
  constructor(private readonly path: string) {
    this.journal = readJournal(path);
  }
  /** A file's text (undefined when there is none). */
  read(rel: string): string | undefined {
    const j = this.journal;
    if (j && rel in j.write) return j.write[rel];
    if (j?.remove.includes(rel)) return undefined;
    const file = rel === CORE ? this.path : join(mapDir(this.path), rel);
    try {
      return readFileSync(file, 'utf8');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return undefined;
      throw new SpacerError(`${file}: cannot read the map (${code}); check its permissions`);
    }
  }
  /** The names of the `.json` files in a folder of the map's (relative), journal included. */
  list(sub: string): string[] {
    const names = new Set<string>();
    try {
      for (const f of readdirSync(join(mapDir(this.path), sub)))
        if (f.endsWith('.json')) names.add(f.slice(0, -5));
    } catch {
      /* none yet */
    }
    const j = this.journal;
    if (j) {
      const prefix = `${sub}/`;
      for (const rel of Object.keys(j.write))
        if (rel.startsWith(prefix) && !rel.slice(prefix.length).includes('/'))
          names.add(rel.slice(prefix.length, -5));
      for (const rel of j.remove)
        if (rel.startsWith(prefix) && !rel.slice(prefix.length).includes('/'))
          names.delete(rel.slice(prefix.length, -5));
    }
    return [...names].sort();
  }
  /** The folders under `ulibs/` (µlibs with variant files). */
  libs(): string[] {
    const names = new Set<string>();
    try {
      for (const d of readdirSync(join(mapDir(this.path), 'ulibs'), { withFileTypes: true }))
        if (d.isDirectory()) names.add(d.name);
    } catch {
      /* none yet */
    }
    for (const rel of Object.keys(this.journal?.write ?? {})) {
      const parts = rel.split('/');
      if (parts[0] === 'ulibs' && parts.length === 3) names.add(parts[1]);
    }
    return [...names].sort();
  }
}

/** The file's JSON object (`f` names the file in its one error line). */
function parseFile(text: string, f: Fields): any {
  let raw: any;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    f.bad((e as Error).message);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) f.bad('not a JSON object');
  return raw;
}

/** The header of the split form. */
interface Core {
  map: SpacerMap;
  ulibs: Record<string, CoreUlib>;
}

/** A µlib's entry: its file (`at` empty), or its line in a header of schema 2. */
function decodeLib(u: any, at: string, f: Fields): CoreUlib {
  const c: CoreUlib = {
    variants: f.count(u?.variants, at, `${at ? '.' : ''}variants`),
    used: f.count(u.used, at, `${at ? '.' : ''}used`),
    single: f.count(u.single, at, `${at ? '.' : ''}single`),
  };
  if (c.used > c.variants || c.single > c.used)
    f.bad(`${at ? `${at}: ` : ''}counts of variants disagree`);
  if (u.slot !== undefined) c.slot = decodeSlot(u.slot, `${at ? `${at}.` : ''}slot`, f);
  return c;
}

function decodeCore(raw: any, f: Fields): Core {
  const own = decodeOwn(raw, f);
  const ulibs: Record<string, CoreUlib> = {};
  if (raw.schema < 3) {
    if (typeof raw.ulibs !== 'object' || raw.ulibs === null) f.bad('ulibs');
    for (const [name, u] of Object.entries<any>(raw.ulibs)) {
      const at = `ulibs.${name}`;
      if (!SAFE.test(name)) f.bad(`${at} is not a µlib name`);
      ulibs[name] = decodeLib(u, at, f);
    }
  }
  return {
    map: {
      schema: raw.schema,
      page_size: raw.page_size ?? PAGE,
      text_base: f.addr(raw.text_base, 'text_base'),
      head: f.addr(raw.head, 'head'),
      regions: decodeRegions(raw, f),
      ...(own ? { own } : {}),
      ulibs: {},
      images: {},
    },
    ulibs,
  };
}

/** The header: the whole map when it is of the single-file form. */
function readHead(path: string, files: MapFiles): MapState | undefined {
  const text = files.read(CORE);
  if (text === undefined) return undefined;
  if (text.trim() === '')
    throw new SpacerError(
      `${path}: corrupt map (empty file); delete it and relink every app to start a new map`,
    );
  const f = fields(path);
  const raw = parseHeader(path, text, f);
  const texts = new Map([[CORE, text]]);
  if (raw.schema < 2) return { map: decodeWhole(raw, f), texts, whole1: true };
  const core = decodeCore(raw, f);
  return {
    map: core.map,
    texts,
    core: core.ulibs,
    ...(raw.schema < 3 ? { coreInHeader: true } : {}),
    images: f.count(raw.images, 'images'),
  };
}

/** A µlib's entry (undefined: it has none), from its file or a header of schema 2. */
function readLib(path: string, files: MapFiles, st: MapState, lib: string): CoreUlib | undefined {
  if (st.coreInHeader || !SAFE.test(lib)) return st.core![lib];
  if (lib in st.core!) return st.core![lib];
  const rel = libRel(lib);
  const text = files.read(rel);
  if (text === undefined) return undefined;
  st.texts.set(rel, text);
  const f = fields(join(mapDir(path), rel));
  return (st.core![lib] = decodeLib(parseFile(text, f), '', f));
}

/** A variant file, decoded; `users`: its count of images. */
function readVariant(
  path: string,
  files: MapFiles,
  texts: Map<string, string>,
  lib: string,
  h: string,
): { v: VariantEntry; users: number } | undefined {
  const rel = variantRel(lib, h);
  const text = files.read(rel);
  if (text === undefined) return undefined;
  texts.set(rel, text);
  const file = join(mapDir(path), rel);
  const f = fields(file);
  const raw = parseFile(text, f);
  return { v: decodeVariant(raw, 'variant', f, true), users: raw.users };
}

/**
 * The variants `want` names (µlib -> variant), read through the journal without the header: what
 * a link in the classic layout peeks at before it takes the lock (the table sizes each recorded).
 * The header lists every µlib of the workspace; decoding it for this cost a link 2 ms at 1 000.
 */
export function peekVariants(
  path: string,
  want: Record<string, string>,
): Record<string, VariantEntry | undefined> {
  const files = new MapFiles(path);
  const texts = new Map<string, string>();
  const out: Record<string, VariantEntry | undefined> = {};
  for (const [lib, h] of Object.entries(want))
    if (SAFE.test(lib) && SAFE.test(h)) out[lib] = readVariant(path, files, texts, lib, h)?.v;
  return out;
}

function readImage(
  path: string,
  files: MapFiles,
  texts: Map<string, string>,
  name: string,
): ImageEntry | undefined {
  const rel = imageRel(name);
  const text = files.read(rel);
  if (text === undefined) return undefined;
  texts.set(rel, text);
  const file = join(mapDir(path), rel);
  const f = fields(file);
  return decodeImage(parseFile(text, f), 'image', f);
}

/** The whole map (undefined when there is none yet). */
export function loadWhole(path: string): MapState | undefined {
  // Read without the lock (`spacer map show`, a test's check), the files of one update may be
  // half landed; every update replaces or removes the journal first, so a read during which the
  // journal changed is read again.
  for (let attempt = 1; ; attempt++) {
    const journal = join(mapDir(path), JOURNAL);
    const before = fileId(journal);
    let st: MapState | undefined, err: unknown;
    try {
      st = loadWholeOnce(path);
    } catch (e) {
      err = e;
    }
    const after = fileId(journal);
    const steady = before ? sameId(before, after) : !after;
    if (steady || attempt >= 20) {
      if (err) throw err;
      return st;
    }
  }
}

function loadWholeOnce(path: string): MapState | undefined {
  const files = new MapFiles(path);
  const st = readHead(path, files);
  if (!st || st.whole1) return st;
  const m = st.map;
  const counted = new Map<VariantEntry, number>();
  for (const name of files.list('ulibs')) readLib(path, files, st, name);
  for (const name of Object.keys(st.core!)) m.ulibs[name] = { variants: {} };
  for (const lib of files.libs()) {
    const hs = files.list(`ulibs/${lib}`);
    if (!SAFE.test(lib) || !hs.length) continue;
    const u = (m.ulibs[lib] ??= { variants: {} });
    for (const h of hs) {
      const got = readVariant(path, files, st.texts, lib, h)!;
      u.variants[h] = got.v;
      counted.set(got.v, got.users);
    }
  }
  for (const [name, c] of Object.entries(st.core!)) if (c.slot) m.ulibs[name].slot = c.slot;
  for (const name of files.list('images')) {
    const im = readImage(path, files, st.texts, name)!;
    m.images[name] = im;
    for (const [u, h] of Object.entries(im.ulibs)) m.ulibs[u]?.variants[h]?.images.push(name);
  }
  // The counts that a link's view relies on, against what the files say (`spacer map check`).
  st.issues = [];
  if (st.images !== Object.keys(m.images).length)
    st.issues.push(
      `the header counts ${st.images} images, the map has ${Object.keys(m.images).length}`,
    );
  for (const [name, u] of Object.entries(m.ulibs)) {
    for (const [h, v] of Object.entries(u.variants))
      if (counted.get(v) !== v.images.length)
        st.issues.push(
          `variant ${h} of ${name} counts ${counted.get(v)} images, ${v.images.length} use it`,
        );
    const want = JSON.stringify(coreUlib({ variants: u.variants }));
    const c = st.core![name];
    const have = JSON.stringify({ variants: c?.variants, used: c?.used, single: c?.single });
    if (want !== have)
      st.issues.push(
        `${st.coreInHeader ? "the header's" : `${libRel(name)}'s`} counts of ${name}'s variants are not its variant files'`,
      );
  }
  return st;
}

/**
 * What a link of `image` needs of the map: the header, the image's entry, and the variants it uses
 * (`want`: µlib → variant) and used. Each variant lists the image if it uses it, and stands for its
 * other users by OTHER_IMAGE; each µlib counts the variants not loaded (UlibEntry.hidden). A map
 * of the single-file form is read whole.
 */
export function loadLinkView(
  path: string,
  image: string,
  want: Record<string, string>,
): MapState | undefined {
  const files = new MapFiles(path);
  const st = readHead(path, files);
  if (!st || st.whole1) return st;
  const m = st.map;
  m.partial = true;
  const before = SAFE.test(image) ? readImage(path, files, st.texts, image) : undefined;
  if (before) m.images[image] = before;
  st.viewImages = Object.keys(m.images);
  const uses = before?.ulibs ?? {};
  for (const lib of new Set([...Object.keys(want), ...Object.keys(uses)])) {
    const c = readLib(path, files, st, lib);
    const u: UlibEntry = { variants: {} };
    if (c?.slot) u.slot = c.slot;
    let used = 0,
      single = 0;
    for (const h of new Set([want[lib], uses[lib]])) {
      if (h === undefined || !SAFE.test(lib) || !SAFE.test(h)) continue;
      const got = readVariant(path, files, st.texts, lib, h);
      if (!got) continue;
      const mine = uses[lib] === h ? 1 : 0;
      if (got.users < mine)
        fields(join(mapDir(path), variantRel(lib, h))).bad(`users: image ${image} uses it`);
      // At most two others listed, the rest counted (VariantEntry.others): an array of every user
      // was most of a link's map pass with 10 000 images in the map.
      const listed = Math.min(got.users - mine, 2);
      got.v.images = new Array<string>(listed).fill(OTHER_IMAGE);
      if (got.users - mine > listed) got.v.others = got.users - mine - listed;
      if (mine) got.v.images.push(image);
      u.variants[h] = got.v;
      used += got.users > 0 ? 1 : 0;
      single += got.users === 1 ? 1 : 0;
    }
    if (c) {
      const hidden = {
        variants: c.variants - Object.keys(u.variants).length,
        used: c.used - used,
        single: c.single - single,
      };
      if (hidden.variants < 0 || hidden.used < 0 || hidden.single < 0)
        fields(st.coreInHeader ? path : join(mapDir(path), libRel(lib))).bad(
          `counts of ${lib}'s variants disagree with its variant files`,
        );
      u.hidden = hidden;
    }
    m.ulibs[lib] = u;
  }
  return st;
}

// ---- writing ----

function encodeCore(m: SpacerMap, images: number): string {
  const out = headLines(m, MAP_SCHEMA);
  out.push(`  "images": ${images}`, '}');
  return out.join('\n') + '\n';
}

/** A µlib's file. */
function encodeLib(c: CoreUlib): string {
  const slot = c.slot ? `, "slot": ${perArea(c.slot, extentJson)}` : '';
  return `{"variants": ${c.variants}, "used": ${c.used}, "single": ${c.single}${slot}}\n`;
}

/** The header's entry of a µlib: its name slot, its variants counted (those not loaded too). */
function coreUlib(u: UlibEntry): CoreUlib {
  const vs = Object.values(u.variants);
  const h = u.hidden ?? { variants: 0, used: 0, single: 0 };
  return {
    ...(u.slot ? { slot: u.slot } : {}),
    variants: h.variants + vs.length,
    used: h.used + vs.filter((v) => v.images.length > 0).length,
    single: h.single + vs.filter((v) => v.images.length === 1).length,
  };
}

function checkName(path: string, what: string, name: string): void {
  if (!SAFE.test(name) || name === '.' || name === '..')
    throw new SpacerError(
      `${path}: ${what} ${JSON.stringify(name)} cannot name a map file; it must be letters, digits, '.', '_', '+' or '-'`,
    );
}

/**
 * Writes what changed of `m` (a whole map or a link's view) against `before`, the state it was read
 * as (none: a new map). Returns whether anything was written. The files' text is made now; `at`
 * runs their commit (the journal, then the files: now, or later through the link server).
 */
export function saveMap(
  path: string,
  before: MapState | undefined,
  m: SpacerMap,
  at: (commitIt: () => void) => void = (f) => f(),
): boolean {
  const write: Record<string, string> = {};
  const remove: string[] = [];
  const old = before?.texts ?? new Map<string, string>();
  const put = (rel: string, text: string) => {
    if (old.get(rel) !== text) write[rel] = text;
  };
  // A header of schema 2 lists every µlib: each gets its file now (the view's and all others).
  const libs: Record<string, CoreUlib> =
    m.partial && before!.coreInHeader ? { ...before!.core! } : {};
  for (const [name, u] of Object.entries(m.ulibs)) {
    checkName(path, 'µlib', name);
    for (const [h, v] of Object.entries(u.variants)) {
      checkName(path, 'variant', h);
      put(variantRel(name, h), `${variantJson(v, 'count')}\n`);
    }
    libs[name] = coreUlib(u);
  }
  for (const [name, im] of Object.entries(m.images)) {
    checkName(path, 'image', name);
    put(imageRel(name), `${imageJson(im)}\n`);
  }
  let images = Object.keys(m.images).length;
  if (m.partial) {
    // A view holds the linking image only; the header counts them all.
    const was = before!.viewImages!;
    images = before!.images! + Object.keys(m.images).filter((n) => !was.includes(n)).length;
  } else {
    // The whole map: files of variants and images it no longer has go (gc, forgotten images, or
    // leftovers beside a map of the single-file form).
    const files = new MapFiles(path);
    for (const lib of files.libs())
      for (const h of files.list(`ulibs/${lib}`))
        if (!m.ulibs[lib]?.variants[h]) remove.push(variantRel(lib, h));
    for (const name of files.list('images')) if (!m.images[name]) remove.push(imageRel(name));
    for (const lib of files.list('ulibs')) if (!m.ulibs[lib]) remove.push(libRel(lib));
  }
  for (const [name, c] of Object.entries(libs)) put(libRel(name), encodeLib(c));
  put(CORE, encodeCore(m, images));
  if (!Object.keys(write).length && !remove.length) return false;
  at(() => commit(path, { write, remove }));
  return true;
}

/** The files of a journal, the header last (readers without the lock read through it anyway). */
function journalFiles(jn: Journal): string[] {
  return Object.keys(jn.write)
    .filter((r) => r !== CORE)
    .sort()
    .concat(CORE in jn.write ? [CORE] : []);
}

const fileOf = (path: string, rel: string) => (rel === CORE ? path : join(mapDir(path), rel));

/** Lands a journal's files by rename (the header last) and its removals; `sync` each file. */
function land(path: string, jn: Journal, sync: boolean): void {
  for (const rel of journalFiles(jn))
    writeFileAtomic(fileOf(path, rel), jn.write[rel], sync ? 'synced' : 'unsynced');
  removeAll(path, jn.remove);
}

function removeAll(path: string, rels: string[]): void {
  const dir = mapDir(path);
  for (const rel of rels) rmSync(join(dir, rel), { force: true });
  // A µlib whose last variant went leaves no folder.
  for (const folder of new Set(rels.map((rel) => dirname(join(dir, rel)))))
    try {
      rmdirSync(folder);
    } catch {
      /* not empty */
    }
}

/** Makes the files a journal landed durable, so that the journal may go or be replaced. */
function checkpoint(path: string, jn: Journal): void {
  for (const rel of journalFiles(jn)) {
    let fd: number;
    try {
      fd = openSync(fileOf(path, rel), 'r');
    } catch {
      continue; // gone since: a later update removed it, and its journal says so
    }
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }
}

/** `old`, then `jn` on top of it. */
function merged(old: Journal, jn: Journal): Journal {
  const write = { ...old.write };
  for (const rel of jn.remove) delete write[rel];
  Object.assign(write, jn.write);
  const remove = [...new Set([...old.remove, ...jn.remove])].filter((rel) => !(rel in jn.write));
  return { write, remove, ...(old.since !== undefined ? { since: old.since } : {}) };
}

function commit(path: string, jn: Journal): void {
  const dir = mapDir(path);
  const file = join(dir, JOURNAL);
  mkdirSync(dir, { recursive: true });
  // Under the lock, finishJournal has landed what the journal holds; it is checked, not re-read.
  const old = readJournal(path);
  // A large update (relayout, gc, a map's first split) syncs its journal, not each of its files,
  // and does not keep it.
  const large = Object.keys(jn.write).length > 256;
  const next = old && !large ? merged(old, jn) : { ...jn, since: Date.now() };
  const keep =
    !large &&
    Object.keys(next.write).length + next.remove.length <= CHECKPOINT_FILES &&
    Date.now() - (next.since ?? 0) < CHECKPOINT_MS;
  if (old && (large || !keep)) checkpoint(path, old);
  const jnext = keep ? next : { ...jn, since: Date.now() };
  const landed =
    keep && old && journalSeen && journalSeen.jn === old
      ? journalSeen.landed
      : new Map<string, FileId>();
  writeFileAtomic(file, JSON.stringify(jnext));
  land(path, jn, false);
  if (large) {
    // Its files land unsynced, and the header synced, as before the journal was kept.
    if (CORE in jn.write) checkpoint(path, { write: { [CORE]: jn.write[CORE] }, remove: [] });
    rmSync(file, { force: true });
    journalSeen = undefined;
    return;
  }
  for (const rel of jn.remove) landed.delete(rel);
  for (const rel of Object.keys(jn.write)) {
    const id = fileId(fileOf(path, rel));
    if (id) landed.set(rel, id);
  }
  const id = fileId(file);
  // Every file of the journal landed by this process (now or before): while the journal is this
  // very file (any other update rewrites it), finishJournal has nothing to check.
  const ours = journalFiles(jnext).every((rel) => landed.has(rel));
  journalSeen = id && { file, id, jn: jnext, landed, ours };
}

/**
 * Under the lock, before an update: the journal's files must hold what it says (a crash between
 * the journal and its files leaves them old or missing, a power cut may leave them empty).
 * What differs is landed again; the journal stays until a checkpoint. A file this process landed
 * or checked, still the same file, is not read again.
 */
export function finishJournal(path: string): void {
  if (!existsSync(join(mapDir(path), JOURNAL))) return;
  const jn = readJournal(path);
  if (!jn || (journalSeen?.jn === jn && journalSeen.ours)) return;
  const landed = journalSeen?.jn === jn ? journalSeen.landed : new Map<string, FileId>();
  const stale: Journal = { write: {}, remove: [] };
  for (const rel of journalFiles(jn)) {
    const f = fileOf(path, rel);
    const id = fileId(f);
    if (sameId(landed.get(rel), id)) continue;
    let text: string | undefined;
    try {
      text = readFileSync(f, 'utf8');
    } catch {
      text = undefined;
    }
    if (text !== jn.write[rel]) stale.write[rel] = jn.write[rel];
    else if (id) landed.set(rel, id);
  }
  stale.remove = jn.remove.filter((rel) => existsSync(join(mapDir(path), rel)));
  land(path, stale, false);
  for (const rel of Object.keys(stale.write)) {
    const id = fileId(fileOf(path, rel));
    if (id) landed.set(rel, id);
  }
}

/** The whole map, parsed, without the consistency check (undefined when there is none yet). */
export function parseMapFile(path: string): SpacerMap | undefined {
  return loadWhole(path)?.map;
}

/** The whole map, parsed and checked (undefined when there is none yet). */
export function readMap(path: string): SpacerMap | undefined {
  const m = parseMapFile(path);
  if (m) assertConsistent(path, m);
  return m;
}

/** Removes the map: its header and its folder of variants and images. */
export function removeMap(path: string): void {
  rmSync(mapDir(path), { recursive: true, force: true });
  rmSync(path, { force: true });
}

/** A copy of the map at `to` (what was there goes first). */
export function copyMap(from: string, to: string): void {
  removeMap(to);
  if (existsSync(mapDir(from))) cpSync(mapDir(from), mapDir(to), { recursive: true });
  cpSync(from, to);
}
