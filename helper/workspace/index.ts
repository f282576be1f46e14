/**
 * lib-spacer example workspace: C micro-libraries with Unikraft's link
 * structure, built, linked and booted under qemu without Unikraft itself.
 * Each module's exports are all public.
 */
export * from './apps.js';
export * from './compile.js';
export * from './link.js';
export * from './boot.js';
