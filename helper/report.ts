// `spacer report` lives in report/ (report/index.ts); this path stays for its importers.
export * from './report/index.js';
