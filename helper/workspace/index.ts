/**
 * lib-spacer example workspace: C micro-libraries with Unikraft's link
 * structure, built, linked and booted under qemu without Unikraft itself.
 */
export {
  type AppSpec,
  type UlibsConfig,
  appLibName,
  loadApps,
  loadUlibsConfig,
  objectBasename,
  objectKey,
  workspaceRoot,
} from './apps.js';
export {
  type CompileOptions,
  type CompiledWorkspace,
  UK_CFLAGS,
  UK_LDRFLAGS,
  compileWorkspace,
  generateLibidSource,
  objectsFor,
} from './compile.js';
export {
  type LinkRequest,
  type LinkedImage,
  type PlatformScripts,
  ENTRY_SYMBOL,
  linkApp,
  linkCommand,
  linkImage,
  platformScripts,
} from './link.js';
export {
  type BootOptions,
  type BootResult,
  bootExpecting,
  bootFailure,
  bootImage,
  type CheckedBoot,
  qemuArgs,
} from './boot.js';
