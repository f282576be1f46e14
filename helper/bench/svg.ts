// The benchmark's plot, hand-written SVG: memory after deduplication (distinct pages × 4 KiB, MiB)
// against the number of instances, log-scale x, one series per layout, legend, axis labels.

export interface Series {
  name: string;
  color: string;
  dash?: string;
  points: { x: number; y: number }[];
}

export interface PlotOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  width?: number;
  height?: number;
  /** Log scale on y as well (default false). */
  logY?: boolean;
  note?: string;
}

const esc = (s: string) =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const f = (n: number) => (Math.round(n * 10) / 10).toString();

/** "Nice" linear ticks covering [0, max]. */
function linearTicks(max: number): number[] {
  if (max <= 0) return [0, 1];
  const raw = max / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw)!;
  const ticks: number[] = [];
  for (let v = 0; v <= max + step * 1e-9; v += step) ticks.push(Math.round(v * 1e6) / 1e6);
  if (ticks[ticks.length - 1] < max)
    ticks.push(Math.round((ticks[ticks.length - 1] + step) * 1e6) / 1e6);
  return ticks;
}

function logTicks(min: number, max: number): number[] {
  const out: number[] = [];
  for (let e = Math.floor(Math.log10(min)); e <= Math.ceil(Math.log10(max)); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (v >= min * 0.999 && v <= max * 1.001) out.push(v);
    }
  }
  return out;
}

const label = (v: number) =>
  v >= 1000 && v % 1000 === 0
    ? `${v / 1000}k`
    : Number.isInteger(v)
      ? String(v)
      : v.toFixed(v < 1 ? 2 : 1);

export function plotSvg(series: Series[], o: PlotOptions): string {
  const W = o.width ?? 760,
    H = o.height ?? 480;
  const m = { l: 78, r: 190, t: 48, b: 62 };
  const pw = W - m.l - m.r,
    ph = H - m.t - m.b;
  const pts = series.flatMap((s) => s.points).filter((p) => p.x > 0 && Number.isFinite(p.y));
  const xMin = Math.min(...pts.map((p) => p.x), 1),
    xMax = Math.max(...pts.map((p) => p.x), 2);
  const yMaxRaw = Math.max(...pts.map((p) => p.y), 1e-3);
  const yMinLog = Math.max(Math.min(...pts.map((p) => p.y).filter((y) => y > 0)), 1e-3);
  const yt = o.logY
    ? logTicks(10 ** Math.floor(Math.log10(yMinLog)), 10 ** Math.ceil(Math.log10(yMaxRaw)))
    : linearTicks(yMaxRaw);
  const yLo = o.logY ? yt[0] : 0,
    yHi = yt[yt.length - 1];
  const lx = (x: number) =>
    m.l + ((Math.log10(x) - Math.log10(xMin)) / (Math.log10(xMax) - Math.log10(xMin) || 1)) * pw;
  const ly = (y: number) =>
    o.logY
      ? m.t +
        ph -
        ((Math.log10(Math.max(y, yLo)) - Math.log10(yLo)) /
          (Math.log10(yHi) - Math.log10(yLo) || 1)) *
          ph
      : m.t + ph - (y / (yHi || 1)) * ph;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="DejaVu Sans, Arial, sans-serif" font-size="12">`,
  );
  out.push(`<rect x="0" y="0" width="${W}" height="${H}" fill="white"/>`);
  out.push(
    `<text x="${f(m.l + pw / 2)}" y="24" text-anchor="middle" font-size="15" font-weight="bold">${esc(o.title)}</text>`,
  );
  // Grid and ticks.
  out.push('<g class="grid" stroke="#e3e3e3" stroke-width="1">');
  for (const v of yt)
    out.push(`<line x1="${m.l}" y1="${f(ly(v))}" x2="${m.l + pw}" y2="${f(ly(v))}"/>`);
  const xt = logTicks(xMin, xMax);
  for (const v of xt)
    out.push(`<line x1="${f(lx(v))}" y1="${m.t}" x2="${f(lx(v))}" y2="${m.t + ph}"/>`);
  out.push('</g>');
  out.push('<g class="ticks" fill="#333">');
  for (const v of yt)
    out.push(`<text x="${m.l - 8}" y="${f(ly(v) + 4)}" text-anchor="end">${label(v)}</text>`);
  for (const v of xt)
    out.push(`<text x="${f(lx(v))}" y="${m.t + ph + 18}" text-anchor="middle">${label(v)}</text>`);
  out.push('</g>');
  out.push(
    `<rect class="frame" x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`,
  );
  out.push(
    `<text class="xlabel" x="${f(m.l + pw / 2)}" y="${H - 22}" text-anchor="middle" font-size="13">${esc(o.xLabel)}</text>`,
  );
  out.push(
    `<text class="ylabel" transform="translate(20 ${f(m.t + ph / 2)}) rotate(-90)" text-anchor="middle" font-size="13">${esc(o.yLabel)}</text>`,
  );
  if (o.note)
    out.push(`<text x="${m.l}" y="${H - 6}" font-size="10" fill="#666">${esc(o.note)}</text>`);
  // Series.
  for (const s of series) {
    const p = s.points.filter((q) => q.x > 0 && Number.isFinite(q.y));
    if (!p.length) continue;
    const d = p.map((q, i) => `${i ? 'L' : 'M'}${f(lx(q.x))},${f(ly(q.y))}`).join(' ');
    out.push(`<g class="series" data-name="${esc(s.name)}">`);
    out.push(
      `<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2.2"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`,
    );
    for (const q of p)
      out.push(`<circle cx="${f(lx(q.x))}" cy="${f(ly(q.y))}" r="3" fill="${s.color}"/>`);
    out.push('</g>');
  }
  // Legend.
  const lgx = m.l + pw + 16;
  out.push(`<g class="legend">`);
  series.forEach((s, i) => {
    const y = m.t + 14 + i * 22;
    out.push(
      `<line x1="${lgx}" y1="${y}" x2="${lgx + 28}" y2="${y}" stroke="${s.color}" stroke-width="2.2"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`,
    );
    out.push(`<text x="${lgx + 36}" y="${y + 4}">${esc(s.name)}</text>`);
  });
  out.push('</g>');
  out.push('</svg>');
  return out.join('\n') + '\n';
}
