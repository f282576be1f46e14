// The run's summary as text for the terminal (`npm run fuzz` without --json).
import { join } from 'node:path';
import type { FuzzSummary } from './summary.js';

/** Text with control characters (other than newlines) shown as \\xNN, for the terminal. */
export function printable(text: string): string {
  return text.replace(
    // eslint-disable-next-line no-control-regex -- control characters are what it replaces
    /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/g,
    (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`,
  );
}

export function formatSummary(s: FuzzSummary, opts: { errors?: number } = {}): string {
  const L: string[] = [];
  L.push(
    `fuzz: ${s.cases.total} cases${s.files ? '' : ` (seed ${JSON.stringify(s.seed)}${s.first ? `, from case ${s.first}` : ''})`} in ${(s.durationMs / 1000).toFixed(1)} s, ${s.casesPerSecond} cases/s, ${s.jobs} workers`,
  );
  if (s.files) L.push(`files: ${s.files.length} checked`);
  else
    L.push(
      `images: ${s.images.count} in ${s.images.dir} (${Object.entries(s.images.kinds)
        .map(([k, n]) => `${n} ${k}`)
        .join(', ')})`,
    );
  L.push(
    `cases: ${s.cases.clean} all steps succeeded, ${s.cases.withClearErrors} ended in clear errors, ${s.cases.withFindings} with findings`,
  );
  L.push(
    `case time: mean ${s.caseMs.mean} ms, p50 ${s.caseMs.p50} ms, p99 ${s.caseMs.p99} ms, max ${s.caseMs.max} ms; worker restarts ${s.workerRestarts}`,
  );
  L.push('');
  L.push('step      success  clear error  finding  mean ms  max ms');
  for (const [k, v] of Object.entries(s.steps)) {
    L.push(
      `${k.padEnd(8)} ${String(v.ok).padStart(8)} ${String(v.error).padStart(12)} ${String(v.finding).padStart(8)} ${String(v.meanMs).padStart(8)} ${String(v.maxMs).padStart(7)}`,
    );
  }
  L.push('');
  const n = opts.errors ?? 25;
  L.push(
    `clear errors by message (cases; ${s.clearErrors.length} kinds${s.clearErrors.length > n ? `, top ${n}` : ''}):`,
  );
  for (const g of s.clearErrors.slice(0, n))
    L.push(
      `  ${String(g.cases).padStart(6)}  ${printable(g.prefix)}  [${Object.entries(g.steps)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ')}]`,
    );
  if (s.rewriteVerifyNotes.length)
    L.push(
      '',
      `note: ${s.rewriteVerifyNotes.length} rewrite(s) succeeded on a mutated image that verify then rejects (first: case ${s.rewriteVerifyNotes[0].index}: ${s.rewriteVerifyNotes[0].note})`,
    );
  L.push('');
  if (!s.findings.length) L.push('findings: none');
  else {
    L.push(
      `FINDINGS: ${s.findingCount} in ${s.cases.withFindings} cases, ${s.findings.length} distinct:`,
    );
    s.findings.forEach((g, i) => {
      L.push('');
      L.push(
        `#${i + 1} ${g.kind}${g.name ? ` ${g.name}` : ''} in ${g.steps.join(', ')} (${g.count} cases: ${g.cases.slice(0, 10).join(', ')}${g.count > 10 ? ', ...' : ''})`,
      );
      L.push(`   ${printable(g.message).split('\n').join('\n   | ')}`);
      if (g.stack)
        L.push(
          ...g.stack
            .split('\n')
            .filter((l) => /^\s+at |^\(recovered/.test(l))
            .slice(0, 6)
            .map((l) => `     ${l.trim()}`),
        );
      L.push(
        `   first: case ${g.first.index}, ${g.first.image}: ${printable(g.first.ops.join('; '))}`,
      );
      L.push(
        `   reproducer: ${g.first.reproducer}${g.first.plan ? ` (plan ${g.first.plan})` : ''}`,
      );
      L.push(`   replay: ${g.replay}`);
    });
  }
  L.push('', `written: ${join(s.out, 'fuzz.json')}`);
  return L.join('\n');
}
