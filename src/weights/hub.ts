// Hugging Face repo ids: resolving them from the local Hugging Face cache, and
// downloading them into it with exactly huggingface_hub's layout, so that dr and
// Python tools share one cache:
//   <cache>/models--ORG--NAME/refs/<revision>            the commit hash
//   <cache>/models--ORG--NAME/blobs/<etag>               file contents, named by ETag
//   <cache>/models--ORG--NAME/snapshots/<commit>/<path>  relative symlinks into blobs/
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { DrError } from '../errors.js';

const COMMIT = /^[0-9a-f]{40}$/;
const SHA256 = /^[0-9a-f]{64}$/;
/** huggingface_hub's repo id rule (validate_repo_id), with the namespace required: a bare NAME is a folder. */
const REPO_ID = /^\w(?:[\w.-]*\w)?\/\w(?:[\w.-]*\w)?$/;

export const isRepoId = (s: string): boolean => REPO_ID.test(s) && !s.includes('--') && !s.includes('..') && s.length <= 96;

const expandHome = (p: string): string => path.resolve(p.replace(/^~(?=$|[/\\])/, os.homedir()));

/** $HF_HOME, resolved the way huggingface_hub does. */
const hfHome = (): string => expandHome(process.env.HF_HOME ?? path.join(process.env.XDG_CACHE_HOME ?? '~/.cache', 'huggingface'));

/** The hub cache root, with huggingface_hub's precedence (HUGGINGFACE_HUB_CACHE is its legacy name). */
export function hubCacheDir(): string {
  const explicit = process.env.HF_HUB_CACHE ?? process.env.HUGGINGFACE_HUB_CACHE;
  return explicit ? expandHome(explicit) : path.join(hfHome(), 'hub');
}

export const repoCacheDir = (repo: string): string => path.join(hubCacheDir(), `models--${repo.replace('/', '--')}`);

// Not only a missing path: HF_HUB_CACHE naming a file makes every path below it ENOTDIR.
function isDir(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** Revisions become paths under refs/ (e.g. refs/pr/1): no way out of it. */
function checkRevision(revision: string): void {
  if (!revision || path.isAbsolute(revision) || revision.split(/[/\\]/).some((s) => s === '' || s === '.' || s === '..')) {
    throw new DrError(`--revision: "${revision}" is not a branch, tag or commit`);
  }
}

/**
 * A model folder: `spec` itself when it is an existing folder, else the cached snapshot of
 * the Hugging Face repo id `spec` at `revision` (default main); `subfolder` inside either.
 */
export function resolveModel(spec: string, opts: { revision?: string; subfolder?: string } = {}): string {
  const stat = fs.statSync(spec, { throwIfNoEntry: false });
  let dir: string;
  if (stat?.isDirectory()) dir = path.resolve(spec);
  else if (stat) throw new DrError(`${spec}: not a folder (a model is a Hugging Face model folder or repo id ORG/NAME)`);
  else if (!isRepoId(spec)) throw new DrError(`${spec}: no such model folder (nor a Hugging Face repo id like ORG/NAME)`);
  else dir = cachedSnapshot(spec, opts.revision ?? 'main');
  if (!opts.subfolder) return dir;
  const sub = path.join(dir, opts.subfolder);
  if (!isDir(sub)) throw new DrError(`${spec}: has no ${opts.subfolder}/ folder (${sub})`);
  return sub;
}

function cachedSnapshot(repo: string, revision: string): string {
  checkRevision(revision);
  const repoDir = repoCacheDir(repo);
  const hint = `download it with \`dr fetch ${repo}${revision === 'main' ? '' : ` --revision ${revision}`}\``;
  if (!isDir(repoDir)) throw new DrError(`${repo}: not a folder and not in the Hugging Face cache (${repoDir}); ${hint}`);
  // As huggingface_hub: a ref names a commit; failing that, the revision may be a commit itself.
  const refFile = path.join(repoDir, 'refs', revision);
  const commit = fs.existsSync(refFile) ? fs.readFileSync(refFile, 'utf8').trim() : COMMIT.test(revision) ? revision : undefined;
  if (!commit) throw new DrError(`${repo}: revision "${revision}" is not in the Hugging Face cache (no ${refFile}); ${hint}`);
  const snapshot = path.join(repoDir, 'snapshots', commit);
  if (!isDir(snapshot)) throw new DrError(`${repo}: revision "${revision}" (commit ${commit}) is not in the Hugging Face cache (no ${snapshot}); ${hint}`);
  return snapshot;
}

// ---- downloading ----------------------------------------------------------------

/** fnmatch, as huggingface_hub's allow_patterns: `*` also matches `/`; a trailing `/` means everything below. */
function globRegExp(glob: string): RegExp {
  const g = glob.endsWith('/') ? `${glob}*` : glob;
  const body = g.replace(/[.+^${}()|\\]/g, '\\$&').replace(/\[!/g, '[^').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${body}$`);
}

/** Weight formats that only duplicate a repo's safetensors (dr reads safetensors only). */
export const REDUNDANT_GLOBS = ['*.bin', '*.ckpt', '*.pt', '*.pth', '*.msgpack', '*.h5', '*.onnx', '*.onnx_data', 'flax_model*', 'tf_model*', 'rust_model*', 'openvino*'];
const REDUNDANT = REDUNDANT_GLOBS.map(globRegExp);

export interface FetchOptions {
  revision?: string;
  /** Only files matching one of these globs. */
  include?: string[];
  /** Keep REDUNDANT_GLOBS files even when the repo has safetensors. */
  all?: boolean;
  /** Default $HF_ENDPOINT or https://huggingface.co. */
  endpoint?: string;
  /** Called once with the bytes left to transfer; the bar is ticked per chunk and stopped at the end. */
  progress?: (totalBytes: number) => { tick(n: number): void; stop(): void };
}

export interface FetchResult {
  repo: string;
  revision: string;
  commit: string;
  /** The snapshot folder. */
  path: string;
  files: string[];
  /** Files whose contents were transferred (the others were already in blobs/). */
  downloaded: string[];
  /** Files left out as redundant weight formats. */
  skipped: string[];
}

interface Http {
  token?: string;
  headers: Record<string, string>;
}

/** The Hub's base URL: http(s) with a host, e.g. https://hf-mirror.com (a bad one would fail deep inside the request). */
function checkEndpoint(endpoint: string, option: string): void {
  let url: URL | undefined;
  try {
    url = new URL(endpoint);
  } catch {
    // reported below
  }
  if (!url || (url.protocol !== 'https:' && url.protocol !== 'http:') || !url.hostname) {
    throw new DrError(`${option}: "${endpoint}" is not an http(s) URL of a Hugging Face Hub (e.g. https://huggingface.co)`);
  }
}

/** Downloads `repo` at `revision` into the Hugging Face cache the way huggingface_hub's snapshot_download does. */
export async function fetchModel(repo: string, opts: FetchOptions = {}): Promise<FetchResult> {
  if (!isRepoId(repo)) throw new DrError(`${repo}: not a Hugging Face repo id (ORG/NAME, e.g. openai/clip-vit-large-patch14)`);
  const revision = opts.revision ?? 'main';
  checkRevision(revision);
  const endpoint = (opts.endpoint ?? process.env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/+$/, '');
  checkEndpoint(endpoint, opts.endpoint !== undefined ? '--endpoint' : 'HF_ENDPOINT');
  const token = process.env.HF_TOKEN ?? readToken();
  const net: Http = { token, headers: { 'Accept-Encoding': 'identity', 'User-Agent': 'dr', ...(token ? { Authorization: `Bearer ${token}` } : {}) } };

  const apiUrl = `${endpoint}/api/models/${repo}/revision/${encodeURIComponent(revision)}`;
  const info = await getJson(apiUrl, net, `repo ${repo} or revision "${revision}"`);
  const commit = info?.sha;
  const siblings = info?.siblings;
  if (typeof commit !== 'string' || !COMMIT.test(commit) || !Array.isArray(siblings)) throw new DrError(`${apiUrl}: not a Hugging Face Hub model listing (no sha / siblings)`);
  const all = siblings.map((s: { rfilename?: unknown }) => s?.rfilename).filter((f): f is string => typeof f === 'string');
  for (const f of all) {
    if (path.isAbsolute(f) || f.split(/[/\\]/).some((s) => s === '' || s === '.' || s === '..')) throw new DrError(`${apiUrl}: unsafe file name "${f}" in the listing`);
  }

  const include = opts.include?.map(globRegExp);
  const hasSafetensors = all.some((f) => f.endsWith('.safetensors'));
  const isRedundant = (f: string): boolean => !opts.all && hasSafetensors && REDUNDANT.some((r) => r.test(path.posix.basename(f)));
  const skipped = all.filter(isRedundant);
  const files = all.filter((f) => !isRedundant(f) && (!include || include.some((r) => r.test(f))));
  if (files.length === 0) {
    const why = skipped.length ? ` (${skipped.length} files in weight formats dr does not read were skipped; --all keeps them)` : '';
    throw new DrError(`${repo}: no files to fetch${opts.include ? ` match --include ${opts.include.join(' ')}` : ''}${why}`);
  }

  const repoDir = repoCacheDir(repo);
  const blobs = path.join(repoDir, 'blobs');
  const snapshot = path.join(repoDir, 'snapshots', commit);
  fs.mkdirSync(blobs, { recursive: true });

  // HEAD every file first (as huggingface_hub): the ETag names the blob, so complete
  // blobs are skipped without a transfer, and the bar knows the total up front.
  // Files come from the commit, not the branch, so a push mid-download cannot mix commits.
  const plan: { file: string; url: string; blob: string; etag: string; size?: number }[] = [];
  let total = 0;
  for (const file of files) {
    const url = `${endpoint}/${repo}/resolve/${commit}/${file.split('/').map(encodeURIComponent).join('/')}`;
    const { etag, size } = await headFile(url, net, commit);
    const blob = path.join(blobs, etag);
    plan.push({ file, url, blob, etag, size });
    if (!fs.existsSync(blob)) total += Math.max(0, (size ?? 0) - (fs.statSync(`${blob}.incomplete`, { throwIfNoEntry: false })?.size ?? 0));
  }

  const downloaded: string[] = [];
  const bar = opts.progress?.(total);
  try {
    for (const p of plan) {
      if (!fs.existsSync(p.blob)) {
        await downloadBlob(p.url, net, p.blob, p.etag, p.size, (n) => bar?.tick(n));
        downloaded.push(p.file);
      }
      const link = path.join(snapshot, p.file);
      const target = path.relative(path.dirname(link), p.blob);
      fs.mkdirSync(path.dirname(link), { recursive: true });
      fs.rmSync(link, { force: true });
      fs.symlinkSync(target, link);
    }
  } finally {
    bar?.stop();
  }
  // Written last, so an interrupted fetch never makes a partial snapshot resolvable by name.
  if (revision !== commit) {
    const ref = path.join(repoDir, 'refs', revision);
    fs.mkdirSync(path.dirname(ref), { recursive: true });
    fs.writeFileSync(ref, commit);
  }
  return { repo, revision, commit, path: snapshot, files, downloaded, skipped };
}

/** The token `huggingface-cli login` saved, as huggingface_hub falls back to it. */
function readToken(): string | undefined {
  const file = process.env.HF_TOKEN_PATH ?? path.join(hfHome(), 'token');
  return fs.existsSync(file) ? fs.readFileSync(file, 'utf8').trim() || undefined : undefined;
}

const TIMEOUT_MS = 60_000;

function send(url: string, method: 'GET' | 'HEAD', headers: Record<string, string>): Promise<http.IncomingMessage> {
  const u = new URL(url);
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new DrError(`${url}: only http and https URLs are supported`);
  return new Promise((resolve, reject) => {
    const req = (u.protocol === 'https:' ? https : http).request(u, { method, headers }, resolve);
    req.setTimeout(TIMEOUT_MS, () => req.destroy(Object.assign(new Error(`no data for ${TIMEOUT_MS / 1000} s`), { code: 'ETIMEDOUT' })));
    req.on('error', (e: NodeJS.ErrnoException) => reject(new DrError(`${url}: cannot connect (${e.code ?? e.message}); offline? HF_ENDPOINT or --endpoint sets a mirror`)));
    req.end();
  });
}

const isAbsoluteUrl = (loc: string): boolean => /^[a-z][a-z\d+.-]*:|^\/\//i.test(loc);

/**
 * A request following redirects: all of them, or only relative ones (the Hub's own, e.g. a
 * renamed repo) to stop at the absolute redirect to the CDN, whose headers carry the metadata.
 */
async function request(url: string, method: 'GET' | 'HEAD', net: Http, headers: Record<string, string>, followAbsolute: boolean): Promise<http.IncomingMessage> {
  let h = { ...net.headers, ...headers };
  for (let hops = 0; ; hops++) {
    const res = await send(url, method, h);
    const loc = res.headers.location;
    const status = res.statusCode ?? 0;
    if (status < 300 || status >= 400 || !loc || (!followAbsolute && isAbsoluteUrl(loc))) return res;
    res.resume();
    if (hops === 10) throw new DrError(`${url}: more than 10 redirects`);
    const next = new URL(loc, url);
    // The token is for the Hub only, never for the CDN it redirects to.
    if (next.origin !== new URL(url).origin) h = Object.fromEntries(Object.entries(h).filter(([k]) => k !== 'Authorization'));
    url = next.href;
  }
}

function httpError(url: string, res: http.IncomingMessage, net: Http, what: string): DrError {
  res.resume();
  const status = res.statusCode ?? 0;
  const serverSays = res.headers['x-error-message'] ? ` (${res.headers['x-error-message']})` : '';
  const hint =
    status === 401 || status === 403
      ? `: ${what} not found, private or gated — ${net.token ? 'HF_TOKEN has no access to it (for a gated model, accept its terms on the Hub)' : 'for a gated or private model, accept its terms on the Hub and set HF_TOKEN'}`
      : status === 404
        ? `: ${what} not found`
        : '';
  return new DrError(`${url}: HTTP ${status}${serverSays}${hint}`);
}

async function getJson(url: string, net: Http, what: string): Promise<any> {
  const res = await request(url, 'GET', net, {}, true);
  if (res.statusCode !== 200) throw httpError(url, res, net, what);
  let text = '';
  try {
    for await (const chunk of res) text += chunk;
    return JSON.parse(text);
  } catch (err) {
    throw new DrError(`${url}: ${err instanceof SyntaxError ? 'the answer is not JSON' : `connection lost (${(err as Error).message})`}`);
  }
}

const header = (res: http.IncomingMessage, name: string): string | undefined => {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] : v;
};

async function headFile(url: string, net: Http, commit: string): Promise<{ etag: string; size?: number }> {
  const res = await request(url, 'HEAD', net, {}, false);
  res.resume();
  const status = res.statusCode ?? 0;
  if (status >= 400 || status < 200) throw httpError(url, res, net, 'file');
  const served = header(res, 'x-repo-commit');
  if (served && served !== commit) throw new DrError(`${url}: served commit ${served}, but the listing is of commit ${commit}`);
  // LFS files: X-Linked-* describe the content behind the CDN redirect (ETag = its sha256).
  const etag = (header(res, 'x-linked-etag') ?? header(res, 'etag'))?.replace(/^W\//, '').replace(/"/g, '');
  if (!etag || !/^[\w.-]+$/.test(etag)) throw new DrError(`${url}: no usable ETag in the answer (not a Hugging Face Hub endpoint?)`);
  const sizeHeader = header(res, 'x-linked-size') ?? (status < 300 ? header(res, 'content-length') : undefined);
  return { etag, size: sizeHeader === undefined ? undefined : Number(sizeHeader) };
}

const fileSize = (p: string): number => fs.statSync(p, { throwIfNoEntry: false })?.size ?? 0;

/**
 * Downloads into `<blob>.incomplete`, resuming what is there with a Range request (also after
 * a dropped connection, retried while bytes keep coming), checks size and, for LFS files, the
 * sha256 the ETag names, then renames it to `blob`.
 */
async function downloadBlob(url: string, net: Http, blob: string, etag: string, size: number | undefined, tick: (n: number) => void): Promise<void> {
  const part = `${blob}.incomplete`;
  const refuse = (why: string): DrError => {
    fs.rmSync(part, { force: true });
    return new DrError(`${url}: ${why}; the partial download was removed, run dr fetch again`);
  };
  for (let failures = 0; size === undefined || fileSize(part) < size; ) {
    const have = fileSize(part);
    const res = await request(url, 'GET', net, have ? { Range: `bytes=${have}-` } : {}, true);
    const status = res.statusCode ?? 0;
    const resumed = status === 206 && new RegExp(`^bytes ${have}-`).test(header(res, 'content-range') ?? '');
    if (status === 416 || (status === 206 && !resumed)) {
      // The server cannot continue from `have`: start over.
      res.resume();
      fs.rmSync(part, { force: true });
      continue;
    }
    if (status !== 200 && status !== 206) throw httpError(url, res, net, 'file');
    let received = 0;
    let lost: string | undefined;
    try {
      await pipeline(
        res,
        async function* (chunks: AsyncIterable<Buffer>) {
          for await (const c of chunks) {
            received += c.length;
            tick(c.length);
            yield c;
          }
        },
        fs.createWriteStream(part, { flags: resumed ? 'a' : 'w' }),
      );
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.path || e.syscall === 'write') throw new DrError(`${part}: ${e.message}`); // the disk, not the network
      lost = e.code ?? e.message;
    }
    if (size === undefined && !lost) break;
    failures = received > 0 ? 0 : failures + 1;
    if (failures === 5) throw new DrError(`${url}: connection lost after ${fileSize(part)} of ${size ?? '?'} bytes (${lost ?? 'no data'}); run dr fetch again to resume`);
  }
  const got = fileSize(part);
  if (size !== undefined && got !== size) throw refuse(`got ${got} bytes, expected ${size}`);
  if (SHA256.test(etag)) {
    const hash = crypto.createHash('sha256');
    for await (const c of fs.createReadStream(part)) hash.update(c);
    const digest = hash.digest('hex');
    if (digest !== etag) throw refuse(`content does not match its sha256 (expected ${etag}, got ${digest})`);
  }
  fs.renameSync(part, blob);
}
