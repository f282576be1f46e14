#!/usr/bin/env node
/**
 * An independent JavaScript model of what every example app prints on its
 * serial console. It recomputes each result from scratch (SHA-256 and CRC-32
 * from node's crypto/zlib, the PRNGs, sorts, number theory, and a port of the
 * LZSS/RLE encoders) so that example/apps/<app>/expected.txt is not just a
 * copy of what the C code printed.
 *
 *   node example/tools/expected.mjs            # check expected.txt files
 *   node example/tools/expected.mjs --write    # (re)write them
 */
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const M64 = (1n << 64n) - 1n;
const sha256 = (data) => createHash('sha256').update(data).digest('hex');
const crc32 = (data) => zlib.crc32(data) >>> 0;
const hex8 = (v) => (v >>> 0).toString(16).padStart(8, '0');

/* ---------------- boot log of the libraries ---------------- */

const LIBINFO_VERSION = {
  kvmplat: '0.17-spacer-ex', nolibc: '0.17', ukalloc: '0.17-buddy', ukboot: '0.17',
  ukcompress: '0.17', ukconsole: '0.17', ukhash: '0.17', uklibid: '0.17', ukmath: '0.17',
  ukrand: '0.17', uksort: '0.17',
};

/* Init table entries in section-name order: [section, lib, message]. */
function initLog(libs) {
  const has = (l) => libs.includes(l);
  const text = Buffer.from('abcabcabcabcabcabc, the rain in spain stays mainly in the plain\0', 'latin1');
  const entries = [
    ['10', 'ukalloc', '[ukalloc] buddy allocator ready (orders 5..28)'],
    ['20', 'kvmplat', null],
    ['31', 'ukhash', '[ukhash] self-test ok'],
    ['32', 'ukcompress', `[ukcompress] self-test ok (${text.length} -> ${lzssCompress(text).length} bytes)`],
    ['33', 'uksort', '[uksort] self-test ok'],
    ['34', 'ukmath', '[ukmath] self-test ok'],
    ['35', 'ukrand', '[ukrand] TLS state ok'],
    ['69', 'ukconsole', '[ukconsole] 1 console device(s)'],
  ].filter(([, l]) => has(l));
  return { lines: entries.filter(([, , m]) => m).map(([, , m]) => m), count: entries.length };
}

/* ---------------- LZSS and RLE (port of ulibs/ukcompress) ---------------- */

export function lzssCompress(input) {
  const n = input.length, WINDOW = 4096, MAXM = 18, MINM = 3, CHAIN = 48;
  const head = new Int32Array(4096).fill(-1), prev = new Int32Array(WINDOW);
  const out = [n & 255, (n >>> 8) & 255, (n >>> 16) & 255, (n >>> 24) & 255];
  const hash3 = (i) => (Math.imul((input[i] << 16) | (input[i + 1] << 8) | input[i + 2], 2654435761) >>> 0) >>> 20;
  let ip = 0, bit = 8, flagPos = 0;
  while (ip < n) {
    let bestLen = 0, bestDist = 0;
    if (bit === 8) { flagPos = out.length; out.push(0); bit = 0; }
    if (ip + MINM <= n) {
      let cand = head[hash3(ip)], chain = 0;
      const maxlen = Math.min(n - ip, MAXM);
      while (cand !== -1 && chain++ < CHAIN && ip - cand <= WINDOW) {
        let l = 0;
        while (l < maxlen && input[cand + l] === input[ip + l]) l++;
        if (l > bestLen) { bestLen = l; bestDist = ip - cand; if (l === maxlen) break; }
        cand = prev[cand % WINDOW];
      }
    }
    let adv;
    if (bestLen >= MINM) {
      const v = ((bestDist - 1) << 4) | (bestLen - MINM);
      out.push(v & 255, v >>> 8); adv = bestLen;
    } else {
      out[flagPos] |= 1 << bit; out.push(input[ip]); adv = 1;
    }
    bit++;
    for (let k = 0; k < adv; k++, ip++) {
      if (ip + MINM <= n) { const h = hash3(ip); prev[ip % WINDOW] = head[h]; head[h] = ip; }
    }
  }
  return Buffer.from(out);
}

function rleCompress(input) {
  const out = [];
  let ip = 0;
  const n = input.length;
  while (ip < n) {
    let run = 1;
    while (ip + run < n && run < 129 && input[ip + run] === input[ip]) run++;
    if (run >= 2) { out.push(0x7e + run, input[ip]); ip += run; continue; }
    let lit = 1;
    while (ip + lit < n && lit < 128 && !(ip + lit + 1 < n && input[ip + lit] === input[ip + lit + 1])) lit++;
    out.push(lit - 1);
    for (let i = 0; i < lit; i++) out.push(input[ip++]);
  }
  return Buffer.from(out);
}

/* ---------------- apps ---------------- */

function faasSha() {
  const vectors = ['', 'abc', 'The quick brown fox jumps over the lazy dog',
    'abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq'];
  const a = Buffer.alloc(1000000, 'a');
  return [
    'faas-sha: start',
    ...vectors.map((v) => `sha256("${v}") = ${sha256(v)}`),
    `sha256(1M x 'a') = ${sha256(a)}`,
    `crc32(1M x 'a') = ${hex8(crc32(a))}`,
    `crc32("${vectors[2]}") = ${hex8(crc32(Buffer.from(vectors[2])))}`,
    'faas-sha: done',
  ];
}

function faasSort() {
  let lcg = 42;
  const next = () => (lcg = (Math.imul(lcg, 1664525) + 1013904223) >>> 0);
  const N = 100000;
  const a = new Uint32Array(N);
  for (let i = 0; i < N; i++) a[i] = next() >>> 8;
  a.sort();
  let weighted = 0n, distinct = 0;
  for (let i = 0; i < N; i++) {
    weighted = (weighted + BigInt(a[i]) * BigInt(i + 1)) & M64;
    if (i === 0 || a[i] !== a[i - 1]) distinct++;
  }
  let rank = 0;
  while (rank < N && a[rank] < 8388608) rank++;
  const words = [];
  for (let i = 0; i < 500; i++) {
    const len = 3 + (next() % 6);
    let w = '';
    for (let j = 0; j < len; j++) w += String.fromCharCode(97 + ((next() >>> 16) % 26));
    words.push(w);
  }
  words.sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
  return [
    'faas-sort: start',
    'sorted: yes, agree: yes',
    `min ${a[0]} median ${a[N / 2]} max ${a[N - 1]} distinct ${distinct}`,
    `weighted sum ${weighted.toString(16)}`,
    `rank of 8388608: ${rank}`,
    `words: first ${words[0]}, last ${words[499]}, sorted: yes`,
    'faas-sort: done',
  ];
}

function faasLz() {
  const vocab = ['unikernel', 'page', 'library', 'kernel', 'memory', 'the', 'of', 'share', 'merge',
    'layout', 'image', 'a', 'linker', 'section', 'dedup', 'qemu'];
  let lcg = 7;
  const next = () => { lcg = (Math.imul(lcg, 1103515245) + 12345) >>> 0; return (lcg >>> 16) & 0x7fff; };
  const SIZE = 65536;
  const text = Buffer.alloc(SIZE);
  let n = 0, words = 0;
  for (;;) {
    const w = vocab[next() % vocab.length];
    if (n + w.length + 1 > SIZE) break;
    text.write(w, n, 'latin1'); n += w.length;
    text[n++] = (++words % 12) ? 0x20 : 0x0a;
  }
  const t = text.subarray(0, n);
  const packed = lzssCompress(t);
  const runs = Buffer.alloc(16384);
  for (let m = 0; m < 16384;) {
    let run = 1 + (next() % 64);
    const v = 65 + (next() % 4);
    while (run-- && m < 16384) runs[m++] = v;
  }
  const rle = rleCompress(runs);
  return [
    'faas-lz: start',
    `text: ${n} bytes, ${words} words, crc32 ${hex8(crc32(t))}`,
    `lzss: ${packed.length} bytes, crc32 ${hex8(crc32(packed))}, roundtrip ok`,
    `rle: 16384 -> ${rle.length} bytes, crc32 ${hex8(crc32(rle))}, roundtrip ok`,
    `lzss(runs): ${lzssCompress(runs).length} bytes`,
    'faas-lz: done',
  ];
}

function faasSum() {
  const N = 2000000;
  const comp = new Uint8Array(N);
  let count = 0, sum = 0;
  const small = [];
  for (let i = 2; i < N; i++) {
    if (comp[i]) continue;
    count++; sum += i;
    if (i < 1100000) small.push(i);
    for (let j = i * i; j < N; j += i) comp[j] = 1;
  }
  const isPrime = (x) => { // trial division, x < 2^40
    for (const p of small) { if (p * p > x) return true; if (x % p === 0) return false; }
    return true;
  };
  let window = 0;
  for (let x = 1e12; x < 1e12 + 1000; x++) window += isPrime(x) ? 1 : 0;
  const P = 1000000007n;
  const powmod = (b, e, m) => { let r = 1n; b %= m; while (e) { if (e & 1n) r = (r * b) % m; b = (b * b) % m; e >>= 1n; } return r; };
  const fib = (k, m) => { // fast doubling, returns [F(k), F(k+1)]
    if (k === 0n) return [0n, 1n];
    const [a, b] = fib(k >> 1n, m);
    const c = (a * ((2n * b - a + m) % m)) % m, d = (a * a + b * b) % m;
    return k & 1n ? [d, (c + d) % m] : [c, d];
  };
  const isqrt = (v) => { let x = BigInt(Math.floor(Math.sqrt(Number(v)))); while (x * x > v) x--; while ((x + 1n) * (x + 1n) <= v) x++; return x; };
  const gcd = (a, b) => (b ? gcd(b, a % b) : a);
  // 2^61-1 is a Mersenne prime; 2^61+1 is divisible by 3.
  const m61 = (1n << 61n) - 1n;
  const mersenne = powmod(3n, m61 - 1n, m61) === 1n ? 1 : 0;
  const plus = (((1n << 61n) + 1n) % 3n) === 0n ? 0 : 1;
  let squares = 0n;
  for (let i = 1n; i <= 100000n; i++) squares += i * i;
  return [
    'faas-sum: start',
    `primes below 2000000: ${count}, sum ${sum}`,
    `primes in [10^12, 10^12+1000): ${window}`,
    `2^61-1 prime: ${mersenne}, 2^61+1 prime: ${plus}`,
    `isqrt(10^18) = ${isqrt(10n ** 18n)}, isqrt(2^64-1) = ${isqrt(M64)}`,
    `gcd(2^40*3^5, 2^12*3^9*7) = ${gcd((1n << 40n) * 243n, (1n << 12n) * 19683n * 7n)}`,
    `2^(10^18) mod p = ${powmod(2n, 10n ** 18n, P)}`,
    `fib(10^15) mod p = ${fib(10n ** 15n, P)[0]}`,
    `sum of squares 1..100000 = ${squares}`,
    'faas-sum: done',
  ];
}

function faasParse() {
  const config = 'name=spacer;pages=4096;ratio=0x1f;offset=-42;mode=ksm-merge;octal=0755;tags=alpha,beta,gamma';
  const out = ['faas-parse: start'];
  let canonical = '';
  let fields = 0;
  const k8 = (k) => k.padEnd(8);
  for (const tok of config.split(';').filter(Boolean)) {
    const eq = tok.indexOf('=');
    if (eq < 0) continue;
    const key = tok.slice(0, eq), val = tok.slice(eq + 1);
    fields++;
    if (key === 'pages' || key === 'ratio' || key === 'octal') {
      const v = val.startsWith('0x') ? parseInt(val.slice(2), 16) : val.startsWith('0') ? parseInt(val, 8) : parseInt(val, 10);
      out.push(`${k8(key)}| ${String(v).padStart(8)} | oct ${v.toString(8)}`);
      out.push(`${k8(key)}| hex ${v.toString(16)} bin ${v.toString(2)}`);
    } else if (key === 'offset') {
      const v = parseInt(val, 10);
      const s = (x) => (x >= 0 ? '+' : '') + x;
      out.push(`${k8(key)}| ${s(v)} | ${s(-v)}`);
    } else if (key === 'tags') {
      val.split(',').filter(Boolean).forEach((t, i) => out.push(`${k8(key)}| tag ${i}: ${t.slice(0, 3)} (${t.length} chars)`));
    } else {
      out.push(`${k8(key)}| ${val}${val.includes('ksm') ? ' [ksm]' : ''}`);
    }
    canonical += `${key}=${val}\n`;
  }
  out.push(`fields ${fields}, canonical sha256 ${sha256(canonical)}`, 'faas-parse: done');
  return out;
}

function kvstore() {
  // xorshift128+ (first published constants 23/17/26), seeded with splitmix64.
  let seed = 2024n;
  const splitmix = () => {
    seed = (seed + 0x9e3779b97f4a7c15n) & M64;
    let z = seed;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M64;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M64;
    return z ^ (z >> 31n);
  };
  let s0 = splitmix(), s1 = splitmix();
  const rand = () => {
    let x = s0; const y = s1;
    s0 = y;
    x = (x ^ (x << 23n)) & M64;
    s1 = x ^ y ^ (x >> 17n) ^ (y >> 26n);
    return (s1 + y) & M64;
  };
  const table = new Map();
  let puts = 0, hits = 0, dels = 0, buckets = 16;
  for (let i = 0; i < 30000; i++) {
    const r = rand();
    const id = Number((r >> 8n) % 5000n);
    switch (Number(r & 3n)) {
      case 0: case 1:
        if (!table.has(id)) { table.set(id, r); if (table.size > buckets * 2) buckets *= 2; } else table.set(id, r);
        puts++; break;
      case 2: hits += table.has(id) ? 1 : 0; break;
      default: if (table.delete(id)) dels++; break;
    }
  }
  let vsum = 0n;
  for (const v of table.values()) vsum = (vsum + v) & M64;
  const keys = Uint32Array.from([...table.keys()].sort((a, b) => a - b));
  return [
    'kvstore: start',
    `ops 30000: puts ${puts}, hits ${hits}, deletes ${dels}, entries ${table.size}, buckets ${buckets}`,
    `value sum ${vsum.toString(16).padStart(16, '0')}`,
    `sorted keys sha256 ${sha256(Buffer.from(keys.buffer))}`,
    'rand calls (TLS counter): 30000, heap check: ok',
    'kvstore: done',
  ];
}

export const CPU_BENCH_ROUNDS = 600000;

function cpuBench() {
  let d = createHash('sha256').update('lib-spacer cpu-bench').digest();
  for (let i = 1; i < CPU_BENCH_ROUNDS; i++) d = createHash('sha256').update(d).digest();
  return [`cpu-bench: start, ${CPU_BENCH_ROUNDS} rounds`, `cpu-bench: digest ${d.toString('hex')}`, 'cpu-bench: done'];
}

const APP_MODELS = {
  'faas-sha': faasSha, 'faas-sort': faasSort, 'faas-lz': faasLz, 'faas-sum': faasSum,
  'faas-parse': faasParse, kvstore, 'cpu-bench': cpuBench,
};

/** The full expected serial output of one app of example/apps.json. */
export function expectedOutput(app) {
  const model = APP_MODELS[app.name];
  if (!model) throw new Error(`no output model for app ${app.name}`);
  const platform = JSON.parse(readFileSync(path.join(ROOT, 'ulibs.json'), 'utf8')).platform;
  const libs = [...platform, ...app.libs];
  const { lines, count } = initLog(libs);
  const variants = app.variants ?? {};
  const libinfo = [...libs].sort().map((l) => `${l}-${LIBINFO_VERSION[l]}${variants[l] ? `-${variants[l]}` : ''}`);
  // objects in the image: platform + the app + the other libraries
  return [
    ...lines,
    `[ukboot] ${app.name}: ${libs.length + 1} libraries, ${count} init functions`,
    `[ukboot] libinfo: ${libinfo.join(' ')}`,
    ...model(),
    '[ukboot] main returned 0',
    '',
  ].join('\n');
}

export function loadAppsJson() {
  return JSON.parse(readFileSync(path.join(ROOT, 'apps.json'), 'utf8')).apps;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const write = process.argv.includes('--write');
  let bad = 0;
  for (const app of loadAppsJson()) {
    const file = path.join(ROOT, 'apps', app.name, 'expected.txt');
    const text = expectedOutput(app);
    if (write) writeFileSync(file, text);
    else if (!existsSync(file) || readFileSync(file, 'utf8') !== text) { bad++; console.error(`${app.name}: expected.txt differs from the model`); }
    console.log(`${write ? 'wrote' : 'checked'} ${path.relative(process.cwd(), file)}`);
  }
  process.exit(bad ? 1 : 0);
}
