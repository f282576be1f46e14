// The link server's wire format (server/serve.ts, server/client.c). One request per connection:
//
//   client → server  u32 length, then NUL-separated fields:
//                    "spacer-request 1", cwd, argc, argv..., envc, "NAME=value"...
//   server → client  frames of one kind byte and a u32 length (little-endian), then the bytes:
//                    'o' stdout, 'e' stderr, 'x' exit status (i32), 'r' run it yourself
//                    (the server is stale or stopping: the client runs the command directly)
export const REQUEST_MAGIC = 'spacer-request 1';

/**
 * The folder of this user's sockets and server logs under `base` (client.c: `$XDG_RUNTIME_DIR`,
 * else /tmp): `<base>/spacer-<uid>`.
 */
export function socketFolder(base: string): string {
  return `${base}/spacer-${process.getuid?.() ?? 0}`;
}

/** One command line to run as the client would have run it. */
export interface Request {
  cwd: string;
  argv: string[];
  env: Record<string, string>;
}

/** The request in `body` (the bytes after the length), or an error line. */
export function parseRequest(body: Buffer): Request | string {
  const f = body.toString('utf8').split('\0');
  if (f[0] !== REQUEST_MAGIC) return 'not a spacer request';
  let i = 1;
  const cwd = f[i++];
  const argc = Number(f[i++]);
  if (!cwd || !Number.isInteger(argc) || argc < 0 || i + argc > f.length) return 'bad argv';
  const argv = f.slice(i, i + argc);
  i += argc;
  const envc = Number(f[i++]);
  if (!Number.isInteger(envc) || envc < 0 || i + envc > f.length) return 'bad environment';
  const env: Record<string, string> = {};
  for (const e of f.slice(i, i + envc)) {
    const eq = e.indexOf('=');
    if (eq > 0) env[e.slice(0, eq)] = e.slice(eq + 1);
  }
  return { cwd, argv, env };
}

/** The bytes of a request (what client.c sends; the tests speak it too). */
export function encodeRequest(r: Request): Buffer {
  const env = Object.entries(r.env).map(([k, v]) => `${k}=${v}`);
  const fields = [REQUEST_MAGIC, r.cwd, String(r.argv.length), ...r.argv, String(env.length)];
  const body = Buffer.from([...fields, ...env].join('\0') + '\0');
  const len = Buffer.alloc(4);
  len.writeUInt32LE(body.length);
  return Buffer.concat([len, body]);
}

export type FrameKind = 'o' | 'e' | 'x' | 'r';

/** One frame of the server's answer. */
export function frame(kind: FrameKind, data: Buffer | string): Buffer {
  const b = typeof data === 'string' ? Buffer.from(data) : data;
  const h = Buffer.alloc(5);
  h.write(kind, 0, 'latin1');
  h.writeUInt32LE(b.length, 1);
  return Buffer.concat([h, b]);
}

/** The exit frame. */
export function exitFrame(code: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32LE(code);
  return frame('x', b);
}
