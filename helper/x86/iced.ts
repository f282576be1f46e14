// iced-x86, loaded when first used. Loading it costs a start-up of its own (a 900 KB script to
// compile and a WebAssembly instance; about 0.14 s here, 0.23 s through Node's ES-module loader,
// which first scans the CommonJS file for its exports): `require` skips that scan, and a command
// that never decodes or encodes (a link whose analyses are all cached, `map show`) never pays it.
// The rest of the helper imports iced's enums and classes from here, under their own names.
import { createRequire } from 'node:module';
import type * as I from 'iced-x86';

let mod: typeof I | undefined;

/**
 * iced-x86 itself (loaded on the first call). Loading rebinds every export below to the real
 * one: only the first touch goes through a stand-in, hot loops read the enums directly.
 */
export function iced(): typeof I {
  if (mod) return mod;
  const m = (mod = createRequire(import.meta.url)('iced-x86') as typeof I);
  ({ Code, FlowControl, OpKind, Register, RegisterExt, DecoderOptions, BlockEncoderOptions } = m);
  ({ Decoder, Instruction, BlockEncoder, MemoryOperand, InstructionInfoFactory } = m);
  return m;
}

/**
 * A module-level value made of iced's enums, built on its first use: built at import, it would
 * load iced-x86 in every command that imports the module.
 */
export function onFirstUse<T>(make: () => T): () => T {
  let v: T | undefined;
  return () => (v ??= make());
}

/** Whether iced-x86 was loaded by this process (the bench and tests report it). */
export function icedLoaded(): boolean {
  return mod !== undefined;
}

/**
 * A stand-in for one export of iced-x86 that loads the package on first touch: property reads
 * (enum members, static methods), `new` and `instanceof` go to the real export.
 */
function lazy<T extends object>(pick: (m: typeof I) => T): T {
  const get = () => pick(iced());
  return new Proxy(function () {} as unknown as T, {
    get: (_t, k) => Reflect.get(get(), k) as unknown,
    has: (_t, k) => Reflect.has(get(), k),
    construct: (_t, args) => Reflect.construct(get() as () => unknown, args) as object,
    apply: (_t, self, args) => Reflect.apply(get() as () => unknown, self, args) as unknown,
    getPrototypeOf: () => Reflect.getPrototypeOf(get()),
  });
}

// Enums.
export let Code = lazy((m) => m.Code);
export type Code = I.Code;
export let FlowControl = lazy((m) => m.FlowControl);
export type FlowControl = I.FlowControl;
export let OpKind = lazy((m) => m.OpKind);
export type OpKind = I.OpKind;
export let Register = lazy((m) => m.Register);
export type Register = I.Register;
export let RegisterExt = lazy((m) => m.RegisterExt);
export let DecoderOptions = lazy((m) => m.DecoderOptions);
export let BlockEncoderOptions = lazy((m) => m.BlockEncoderOptions);

// Classes.
export let Decoder = lazy((m) => m.Decoder);
export type Decoder = I.Decoder;
export let Instruction = lazy((m) => m.Instruction);
export type Instruction = I.Instruction;
export let BlockEncoder = lazy((m) => m.BlockEncoder);
export let MemoryOperand = lazy((m) => m.MemoryOperand);
export let InstructionInfoFactory = lazy((m) => m.InstructionInfoFactory);
