/**
 * The example workspace: where it is, which micro-libraries (µlibs) and
 * which applications it has. See example/README.md.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** One application image of the example workspace. */
export interface AppSpec {
  /** Application name, e.g. "faas-sha" (also the image name, CONFIG_UK_NAME). */
  name: string;
  /** Absolute path of example/apps/<name>/. */
  dir: string;
  /** The application's own µlib, Unikraft style: "app" + name with '-' → '_'. */
  appLib: string;
  /** Other µlibs of the image (not the platform, not the app), in link order. */
  libs: string[];
  /**
   * Object basenames in LINK ORDER, as Unikraft links them: platform
   * libraries, the application library, then the other libraries, e.g.
   * ["libkvmplat.o", "appfaas_sha.o", "libnolibc.o", ...].
   */
  ulibs: string[];
  /** Keys into CompiledWorkspace.objects, same order as `ulibs`. */
  objectKeys: string[];
  /** Variant chosen per µlib, e.g. { nolibc: "full" }. */
  variants: Record<string, string>;
  /** Absolute path of the expected serial output (example/apps/<name>/expected.txt). */
  expectedOutput: string;
  /** True for CPU-bound benchmark apps (cpu-bench). */
  bench: boolean;
}

/** example/ulibs.json */
export interface UlibsConfig {
  platform: string[];
  perApp: string[];
  variants: Record<string, Record<string, string[]>>;
}

interface AppsJson {
  apps: { name: string; libs: string[]; variants?: Record<string, string>; bench?: boolean }[];
}

let cachedRoot: string | undefined;

/** Absolute path of the example workspace (the repository's example/ directory). */
export function workspaceRoot(): string {
  if (cachedRoot) return cachedRoot;
  const env = process.env.SPACER_EXAMPLE_DIR;
  if (env) return (cachedRoot = path.resolve(env));
  // Works from helper/workspace/*.ts (tsx) and helper/dist/workspace/*.js (tsc).
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = path.join(dir, 'example');
    if (
      existsSync(path.join(candidate, 'apps.json')) &&
      existsSync(path.join(candidate, 'ulibs.json'))
    ) {
      return (cachedRoot = candidate);
    }
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error('lib-spacer: cannot find the example/ workspace');
    dir = parent;
  }
}

/** The µlib configuration (platform libs, per-app libs, variants). */
export function loadUlibsConfig(): UlibsConfig {
  const raw = JSON.parse(
    readFileSync(path.join(workspaceRoot(), 'ulibs.json'), 'utf8'),
  ) as Partial<UlibsConfig>;
  return {
    platform: raw.platform ?? [],
    perApp: raw.perApp ?? [],
    variants: raw.variants ?? {},
  };
}

/** Name of an application's own µlib: "faas-sha" → "appfaas_sha". */
export function appLibName(app: string): string {
  return 'app' + app.replace(/[^A-Za-z0-9_]/g, '_');
}

/**
 * Key of one compiled µlib instance in CompiledWorkspace.objects:
 * "nolibc", "nolibc+full" (variant), "ukboot@faas-sha" (built per app),
 * "appfaas_sha" (an application).
 */
export function objectKey(lib: string, variant?: string, app?: string): string {
  return lib + (variant ? `+${variant}` : '') + (app ? `@${app}` : '');
}

/** Object file basename of a µlib: "nolibc" → "libnolibc.o", "appx" → "appx.o". */
export function objectBasename(lib: string): string {
  return lib.startsWith('app') ? `${lib}.o` : `lib${lib}.o`;
}

/**
 * The AppSpec of an application whose sources are in `dir`: its link order (platform µlibs, its
 * own µlib, its libraries) and the object each µlib of it is built as.
 */
export function appSpecOf(
  cfg: UlibsConfig,
  a: { name: string; libs: string[]; variants: Record<string, string> },
  dir: string,
  bench: boolean,
): AppSpec {
  const appLib = appLibName(a.name);
  const order = [...cfg.platform, appLib, ...a.libs];
  const keyOf = (lib: string): string => {
    if (lib === appLib) return appLib;
    return objectKey(lib, a.variants[lib], cfg.perApp.includes(lib) ? a.name : undefined);
  };
  return {
    name: a.name,
    dir,
    appLib,
    libs: [...a.libs],
    ulibs: order.map(objectBasename),
    objectKeys: order.map(keyOf),
    variants: { ...a.variants },
    expectedOutput: path.join(dir, 'expected.txt'),
    bench,
  };
}

/** All applications of example/apps.json, with their link order resolved. */
export function loadApps(): AppSpec[] {
  const root = workspaceRoot();
  const cfg = loadUlibsConfig();
  const json = JSON.parse(readFileSync(path.join(root, 'apps.json'), 'utf8')) as AppsJson;
  return json.apps.map((a) => {
    const variants = a.variants ?? {};
    for (const [lib, v] of Object.entries(variants)) {
      if (!cfg.variants[lib]?.[v]) throw new Error(`app ${a.name}: unknown variant ${lib}+${v}`);
    }
    return appSpecOf(
      cfg,
      { name: a.name, libs: a.libs, variants },
      path.join(root, 'apps', a.name),
      a.bench === true,
    );
  });
}
