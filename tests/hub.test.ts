// Hugging Face repo ids: `dr fetch` against a local stand-in for the Hub (127.0.0.1 only,
// offline), the cache layout it writes (exactly huggingface_hub's), resolveModel reading it
// back, and every fault ending in one clear line. The CLI runs need `npm run build`.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DrError } from '../src/errors.js';
import { fetchModel, hubCacheDir, resolveModel } from '../src/weights/hub.js';
import { runDr, expectUserError, type CliResult } from './cli_runner.js';
import { FIXTURES, SHARED } from './helpers.js';
import { etagOf, sha256, startHub, type HubFile, type HubServer } from './hub_server.js';

const CLIP = path.join(FIXTURES, 'clip-tiny');
const COMMIT = 'a3b1c0ffee0123456789abcdef0123456789abcd';
const clipFile = (name: string, lfs = false): HubFile => ({ path: name, data: fs.readFileSync(path.join(CLIP, name)), lfs });
const FILES: HubFile[] = [
  ...['config.json', 'vocab.json', 'merges.txt', 'preprocessor_config.json', 'tokenizer_config.json', 'special_tokens_map.json'].map((f) => clipFile(f)),
  clipFile('model.safetensors', true),
  { ...clipFile('io.safetensors', true), path: 'extra/nested/io.safetensors' },
  { path: 'extra/notes.txt', data: Buffer.from('nested plain file\n') },
  // Formats that duplicate the safetensors: skipped unless --all.
  { path: 'pytorch_model.bin', data: Buffer.alloc(3000, 7), lfs: true },
  { path: 'tf_model.h5', data: Buffer.alloc(2000, 9), lfs: true },
];
const WANTED = FILES.filter((f) => !/\.(bin|h5)$/.test(f.path));
const MODEL = FILES.find((f) => f.path === 'model.safetensors')!;
const MODEL_SHA = sha256(MODEL.data);

let hub: HubServer;
let tmp: string;
let home: string; // a fresh HF_HOME per test

const repoDir = (repo = 'org/tiny'): string => path.join(home, 'hub', `models--${repo.replace('/', '--')}`);
const fetchTiny = (opts: Parameters<typeof fetchModel>[1] = {}) => fetchModel('org/tiny', { endpoint: hub.url, ...opts });
const transfers = (since: number) => hub.log.slice(since).filter((r) => r.method === 'GET' && !r.path.startsWith('/api/'));

beforeAll(async () => {
  for (const v of ['HF_HUB_CACHE', 'HUGGINGFACE_HUB_CACHE', 'HF_TOKEN', 'HF_TOKEN_PATH', 'HF_ENDPOINT', 'XDG_CACHE_HOME']) delete process.env[v];
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dr-hub-'));
  hub = await startHub(
    { 'org/tiny': { commit: COMMIT, files: FILES }, 'org/gated': { commit: COMMIT, files: FILES.slice(0, 1), token: 'hf_secret' } },
    { 'old-org/tiny': 'org/tiny' },
  );
});
afterAll(async () => {
  await hub.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});
beforeEach(() => {
  home = fs.mkdtempSync(path.join(tmp, 'home-'));
  process.env.HF_HOME = home;
  hub.faults.drop.clear();
  hub.faults.corrupt.clear();
  hub.faults.ignoreRange = false;
});

function expectLayout(repo = 'org/tiny'): void {
  const snapshot = path.join(repoDir(repo), 'snapshots', COMMIT);
  expect(fs.readFileSync(path.join(repoDir(repo), 'refs', 'main'), 'utf8')).toBe(COMMIT);
  expect(fs.readdirSync(path.join(repoDir(repo), 'snapshots'))).toEqual([COMMIT]);
  for (const f of WANTED) {
    const link = path.join(snapshot, f.path);
    expect(fs.lstatSync(link).isSymbolicLink(), f.path).toBe(true);
    const depth = f.path.split('/').length - 1;
    expect(fs.readlinkSync(link)).toBe(`${'../'.repeat(depth + 2)}blobs/${etagOf(f)}`);
    expect(fs.readFileSync(link).equals(f.data), f.path).toBe(true);
  }
  expect(fs.existsSync(path.join(snapshot, 'pytorch_model.bin'))).toBe(false);
  expect(fs.readdirSync(path.join(repoDir(repo), 'blobs')).sort()).toEqual(WANTED.map(etagOf).sort());
}

describe('dr fetch (library)', () => {
  it("writes huggingface_hub's cache layout; resolveModel finds it; a second fetch transfers nothing", async () => {
    const r = await fetchTiny();
    expect(r).toMatchObject({ repo: 'org/tiny', revision: 'main', commit: COMMIT, path: path.join(repoDir(), 'snapshots', COMMIT) });
    expect(r.files.sort()).toEqual(WANTED.map((f) => f.path).sort());
    expect(r.skipped).toEqual(['pytorch_model.bin', 'tf_model.h5']);
    expectLayout();
    // LFS files came from the CDN the Hub redirected to, with the commit, not the branch, in the URL.
    expect(hub.log.some((l) => l.method === 'GET' && l.path === `/cdn/${MODEL_SHA}`)).toBe(true);
    expect(hub.log.some((l) => l.path === `/org/tiny/resolve/${COMMIT}/extra/nested/io.safetensors`)).toBe(true);

    expect(resolveModel('org/tiny')).toBe(r.path);
    expect(resolveModel('org/tiny', { revision: COMMIT })).toBe(r.path);
    expect(resolveModel('org/tiny', { subfolder: 'extra/nested' })).toBe(path.join(r.path, 'extra/nested'));
    expect(hubCacheDir()).toBe(path.join(home, 'hub'));

    const since = hub.log.length;
    const again = await fetchTiny();
    expect(again.downloaded).toEqual([]);
    expect(transfers(since)).toEqual([]);
    expectLayout();
  });

  it('--include selects files; redundant formats need --all', async () => {
    expect((await fetchTiny({ include: ['*.json'] })).files.every((f) => f.endsWith('.json'))).toBe(true);
    expect((await fetchTiny({ include: ['extra/'] })).files.sort()).toEqual(['extra/nested/io.safetensors', 'extra/notes.txt']);
    await expect(fetchTiny({ include: ['*.bin'] })).rejects.toThrow(/no files to fetch match --include \*\.bin \(2 files .* --all/);
    const all = await fetchTiny({ all: true, include: ['*.bin', '*.h5'] });
    expect(all.files).toEqual(['pytorch_model.bin', 'tf_model.h5']);
    expect(fs.readFileSync(path.join(all.path, 'pytorch_model.bin')).equals(FILES.find((f) => f.path === 'pytorch_model.bin')!.data)).toBe(true);
  });

  it('resumes a dropped connection with a Range request and ends with the right sha256', async () => {
    hub.faults.drop.set(MODEL_SHA, 100_000);
    const since = hub.log.length;
    await fetchTiny();
    const cdn = transfers(since).filter((l) => l.path === `/cdn/${MODEL_SHA}`);
    // At most the drop point: what the client had buffered but not yet stored dies with the socket.
    expect(cdn).toHaveLength(2);
    expect(cdn[0].range).toBeUndefined();
    const resumedAt = Number(/^bytes=(\d+)-$/.exec(cdn[1].range!)![1]);
    expect(resumedAt).toBeGreaterThan(0);
    expect(resumedAt).toBeLessThanOrEqual(100_000);
    expect(sha256(fs.readFileSync(path.join(repoDir(), 'blobs', MODEL_SHA)))).toBe(MODEL_SHA);
    expectLayout();
  });

  it('resumes the .incomplete blob an interrupted run left, or restarts when the server ignores Range', async () => {
    const blobs = path.join(repoDir(), 'blobs');
    fs.mkdirSync(blobs, { recursive: true });
    fs.writeFileSync(path.join(blobs, `${MODEL_SHA}.incomplete`), MODEL.data.subarray(0, 12345));
    let since = hub.log.length;
    await fetchTiny();
    expect(transfers(since).filter((l) => l.path === `/cdn/${MODEL_SHA}`).map((l) => l.range)).toEqual(['bytes=12345-']);
    expectLayout();

    home = fs.mkdtempSync(path.join(tmp, 'home-'));
    process.env.HF_HOME = home;
    fs.mkdirSync(path.join(repoDir(), 'blobs'), { recursive: true });
    fs.writeFileSync(path.join(repoDir(), 'blobs', `${MODEL_SHA}.incomplete`), Buffer.alloc(5000, 1)); // not even a prefix: the 200 overwrites it
    hub.faults.ignoreRange = true;
    since = hub.log.length;
    await fetchTiny();
    expect(transfers(since).filter((l) => l.path === `/cdn/${MODEL_SHA}`).map((l) => l.range)).toEqual(['bytes=5000-']);
    expectLayout();
  });

  it('refuses a corrupted payload, keeps no blob or ref, and recovers on the next fetch', async () => {
    hub.faults.corrupt.add(MODEL_SHA);
    const err = await fetchTiny().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DrError);
    expect((err as Error).message).toMatch(new RegExp(`/org/tiny/resolve/${COMMIT}/model.safetensors: content does not match its sha256 \\(expected ${MODEL_SHA}, got [0-9a-f]{64}\\); the partial download was removed`));
    const blobs = fs.readdirSync(path.join(repoDir(), 'blobs'));
    expect(blobs.filter((b) => b.startsWith(MODEL_SHA))).toEqual([]);
    expect(fs.existsSync(path.join(repoDir(), 'refs'))).toBe(false);
    expect(() => resolveModel('org/tiny')).toThrow(/revision "main" is not in the Hugging Face cache/);

    hub.faults.corrupt.clear();
    await fetchTiny();
    expectLayout();
  });

  it("follows the Hub's relative redirects for a renamed repo, caching it under the name asked for", async () => {
    await fetchModel('old-org/tiny', { endpoint: hub.url });
    expectLayout('old-org/tiny');
  });
});

describe('resolveModel', () => {
  it('takes folders as they are and repo ids from the cache, with huggingface_hub precedence for the cache root', () => {
    expect(resolveModel(path.relative(process.cwd(), CLIP))).toBe(CLIP);
    expect(resolveModel(CLIP, { subfolder: '.' })).toBe(CLIP);
    process.env.HF_HUB_CACHE = path.join(tmp, 'elsewhere');
    try {
      expect(hubCacheDir()).toBe(path.join(tmp, 'elsewhere'));
      expect(() => resolveModel('org/tiny')).toThrow(`(${path.join(tmp, 'elsewhere', 'models--org--tiny')})`);
    } finally {
      delete process.env.HF_HUB_CACHE;
    }
    delete process.env.HF_HOME;
    expect(hubCacheDir()).toBe(path.join(os.homedir(), '.cache/huggingface/hub'));
  });

  it('says what it looked for and where', async () => {
    const missing = path.join(home, 'hub', 'models--openai--clip-vit-large-patch14');
    expect(() => resolveModel('openai/clip-vit-large-patch14')).toThrow(
      `openai/clip-vit-large-patch14: not a folder and not in the Hugging Face cache (${missing}); download it with \`dr fetch openai/clip-vit-large-patch14\``,
    );
    expect(() => resolveModel('nope')).toThrow('nope: no such model folder (nor a Hugging Face repo id like ORG/NAME)');
    expect(() => resolveModel('./a/b')).toThrow('no such model folder');
    expect(() => resolveModel(path.join(CLIP, 'config.json'))).toThrow('config.json: not a folder');
    await fetchTiny({ include: ['*.json'] });
    expect(() => resolveModel('org/tiny', { revision: 'v2' })).toThrow(`org/tiny: revision "v2" is not in the Hugging Face cache (no ${path.join(repoDir(), 'refs', 'v2')}); download it with \`dr fetch org/tiny --revision v2\``);
    expect(() => resolveModel('org/tiny', { revision: 'b'.repeat(40) })).toThrow(`(no ${path.join(repoDir(), 'snapshots', 'b'.repeat(40))})`);
    expect(() => resolveModel('org/tiny', { subfolder: 'unet' })).toThrow('org/tiny: has no unet/ folder');
    expect(() => resolveModel('org/tiny', { revision: '../../x' })).toThrow('is not a branch, tag or commit');
  });
});


/** dr with a clean Hugging Face environment: this test's HF_HOME plus `env`. */
function dr(env: Record<string, string>, ...args: string[]): Promise<CliResult> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('HF_')));
  return runDr(args, { env: { ...clean, HF_HOME: home, ...env } });
}

describe('dr fetch (CLI)', () => {
  it('prints the snapshot folder, or --json; HF_ENDPOINT picks the Hub', async () => {
    const plain = await dr({ HF_ENDPOINT: hub.url }, 'fetch', 'org/tiny');
    expect(plain.code, plain.stderr).toBe(0);
    expect(plain.stdout).toBe(`${path.join(repoDir(), 'snapshots', COMMIT)}\n`);
    expect(plain.stderr).toContain('skipped 2 files in weight formats dr does not read (pytorch_model.bin, tf_model.h5); --all fetches them');
    expectLayout();

    const json = await dr({}, 'fetch', 'org/tiny', '--endpoint', hub.url, '--revision', COMMIT, '--include', 'config.json', '*.txt', '--json');
    expect(json.code, json.stderr).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual({ repo: 'org/tiny', revision: COMMIT, commit: COMMIT, path: path.join(repoDir(), 'snapshots', COMMIT), files: ['config.json', 'merges.txt', 'extra/notes.txt'] });
  });

  it('sends HF_TOKEN to the Hub for gated models, and says so when it is missing', async () => {
    expectUserError(await dr({}, 'fetch', 'org/gated', '--endpoint', hub.url), `${hub.url}/api/models/org/gated/revision/main: HTTP 401`, 'gated', 'set HF_TOKEN');
    const since = hub.log.length;
    const ok = await dr({ HF_TOKEN: 'hf_secret' }, 'fetch', 'org/gated', '--endpoint', hub.url);
    expect(ok.code, ok.stderr).toBe(0);
    expect(hub.log.slice(since).every((l) => l.auth === 'Bearer hf_secret')).toBe(true);
    expectUserError(await dr({ HF_TOKEN: 'hf_wrong' }, 'fetch', 'org/gated', '--endpoint', hub.url), 'HTTP 401', 'HF_TOKEN has no access');
  });

  it('ends every fault in one line: 404s, no server, corrupted payloads, bad ids', async () => {
    expectUserError(await dr({}, 'fetch', 'org/missing', '--endpoint', hub.url), `${hub.url}/api/models/org/missing/revision/main: HTTP 404 (Repository not found): repo org/missing or revision "main" not found`);
    expectUserError(await dr({}, 'fetch', 'org/tiny', '--revision', 'v9', '--endpoint', hub.url), 'HTTP 404 (Revision Not Found)', 'revision "v9" not found');
    expectUserError(await dr({}, 'fetch', 'org/tiny', '--endpoint', 'http://127.0.0.1:1'), 'http://127.0.0.1:1/api/models/org/tiny/revision/main: cannot connect (ECONNREFUSED)');
    expectUserError(await dr({}, 'fetch', 'not-a-repo', '--endpoint', hub.url), 'not-a-repo: not a Hugging Face repo id');
    hub.faults.corrupt.add(MODEL_SHA);
    expectUserError(await dr({}, 'fetch', 'org/tiny', '--endpoint', hub.url), 'content does not match its sha256');
  });

  it('--model takes a repo id: missing ones say how to fetch them, fetched ones run', async () => {
    const photo = path.join(SHARED, 'images/chelsea.png');
    expectUserError(await dr({}, 'probe', photo, '--model', 'org/tiny'), 'org/tiny: not a folder and not in the Hugging Face cache', 'dr fetch org/tiny');
    await fetchTiny();
    const r = await dr({}, 'probe', photo, '--model', 'org/tiny', '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).results).toHaveLength(1);
  });
});
