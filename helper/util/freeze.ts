// Values a long-lived process hands to more than one caller.

/** `v` and everything it holds, frozen (typed arrays cannot be: callers must not write them). */
export function deepFreeze<T>(v: T): T {
  if (typeof v !== 'object' || v === null || Object.isFrozen(v) || ArrayBuffer.isView(v)) return v;
  for (const x of Object.values(v as object)) deepFreeze(x);
  return Object.freeze(v);
}
