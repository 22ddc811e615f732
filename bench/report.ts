// Renders saved `npm run bench -- ... --json` documents as markdown (for docs/benchmarks.md):
//   node dist/bench/report.js run1.json [run2.json ...]
import { readFileSync } from 'node:fs';
import type { AdapterInfo, MachineInfo } from './timing.js';
import { sectionTable, type Result } from './tables.js';

interface Doc {
  date: string;
  command: string;
  machine: MachineInfo;
  adapter: AdapterInfo;
  seconds: number;
  results: Result[];
  failures: { benchmark: string; error: string }[];
}

const files = process.argv.slice(2);
if (!files.length) {
  console.error('usage: node dist/bench/report.js RESULT.json...');
  process.exit(2);
}
for (const file of files) {
  const doc = JSON.parse(readFileSync(file, 'utf8')) as Doc;
  const m = doc.machine;
  const a = doc.adapter;
  console.log(`<!-- ${file} -->`);
  console.log(`Command: \`${doc.command}\` — ${doc.date.slice(0, 16).replace('T', ' ')} UTC, ${Math.round(doc.seconds)} s; ` +
    `${a.name} (${a.description}, ${a.backend}); ${m.cpu}, ${m.cores} cores, load average at start ${m.loadavg?.join(' / ') ?? '?'}.\n`);
  const sections = [...new Set(doc.results.map((r) => r.section))];
  for (const s of sections) console.log(`#### ${s}\n\n${sectionTable(s, doc.results.filter((r) => r.section === s))}\n`);
  for (const f of doc.failures) console.log(`- failed: ${f.benchmark}: ${f.error}`);
}
