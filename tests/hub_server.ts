// A local stand-in for the Hugging Face Hub, answering the way huggingface.co does:
// the model API listing, `resolve` URLs (plain files directly with a git-blob ETag; LFS
// files by a 302 to the "CDN" with X-Linked-Etag = sha256), Range requests, relative
// redirects for renamed repos, gated repos. Faults are switched on per test.
import crypto from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface HubFile {
  path: string;
  data: Buffer;
  lfs?: boolean;
}

export interface HubRepo {
  commit: string;
  files: HubFile[];
  /** Gated: every Hub request needs `Authorization: Bearer <token>`. */
  token?: string;
}

export interface LoggedRequest {
  method: string;
  path: string;
  range?: string;
  auth?: string;
}

export interface HubServer {
  url: string;
  log: LoggedRequest[];
  faults: {
    /** sha256 → bytes after which the next CDN transfer of that blob drops the connection (once). */
    drop: Map<string, number>;
    /** sha256s whose CDN payload has one byte flipped. */
    corrupt: Set<string>;
    /** Answer Range requests with the whole file (200), as servers without Range support do. */
    ignoreRange: boolean;
  };
  close(): Promise<void>;
}

export const sha256 = (b: Buffer): string => crypto.createHash('sha256').update(b).digest('hex');
/** The ETag the Hub gives non-LFS files: their git blob id. */
export const gitBlobId = (b: Buffer): string => crypto.createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');
export const etagOf = (f: HubFile): string => (f.lfs ? sha256(f.data) : gitBlobId(f.data));

/** `renamed` maps old repo ids to current ones, answered with relative 307s as the Hub does. */
export async function startHub(repos: Record<string, HubRepo>, renamed: Record<string, string> = {}): Promise<HubServer> {
  const cdn = new Map<string, Buffer>();
  for (const r of Object.values(repos)) for (const f of r.files) if (f.lfs) cdn.set(sha256(f.data), f.data);
  const faults: HubServer['faults'] = { drop: new Map(), corrupt: new Set(), ignoreRange: false };
  const log: LoggedRequest[] = [];

  const server = http.createServer((req, res) => {
    const url = new URL(req.url!, 'http://hub');
    log.push({ method: req.method!, path: url.pathname, range: req.headers.range, auth: req.headers.authorization });
    const parts = url.pathname.split('/').slice(1).map(decodeURIComponent);
    const fail = (status: number, message: string): void => {
      res.writeHead(status, { 'X-Error-Message': message, 'Content-Type': 'application/json' }).end(JSON.stringify({ error: message }));
    };

    if (parts[0] === 'cdn') {
      const sha = parts[1];
      let data = cdn.get(sha);
      if (!data) return fail(404, 'no such object');
      if (faults.corrupt.has(sha)) {
        data = Buffer.from(data);
        data[data.length >> 1] ^= 0xff;
      }
      return sendBytes(req, res, data, { ETag: `"cdn-${sha.slice(0, 8)}"` }, sha);
    }

    const isApi = parts[0] === 'api' && parts[1] === 'models' && parts[4] === 'revision';
    const [org, name] = isApi ? parts.slice(2, 4) : parts.slice(0, 2);
    const id = `${org}/${name}`;
    if (renamed[id]) {
      const moved = url.pathname.replace(`/${org}/${name}/`, `/${renamed[id]}/`);
      return void res.writeHead(307, { Location: moved }).end();
    }
    const repo = repos[id];
    if (!repo) return fail(404, 'Repository not found');
    if (repo.token && req.headers.authorization !== `Bearer ${repo.token}`) return fail(401, `Access to model ${id} is restricted.`);

    if (isApi) {
      const rev = parts.slice(5).join('/');
      if (rev !== 'main' && rev !== repo.commit) return fail(404, 'Revision Not Found');
      return void res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ id, sha: repo.commit, siblings: repo.files.map((f) => ({ rfilename: f.path })) }));
    }
    if (parts[2] !== 'resolve') return fail(404, 'not a Hub route');
    if (parts[3] !== 'main' && parts[3] !== repo.commit) return fail(404, 'Revision Not Found');
    const file = repo.files.find((f) => f.path === parts.slice(4).join('/'));
    if (!file) return fail(404, 'Entry not found');
    if (file.lfs) {
      const sha = sha256(file.data);
      const body = `Found. Redirecting to /cdn/${sha}`;
      return void res
        .writeHead(302, {
          Location: `http://${req.headers.host}/cdn/${sha}`,
          'X-Linked-Etag': `"${sha}"`,
          'X-Linked-Size': file.data.length,
          'X-Repo-Commit': repo.commit,
          ETag: `"${gitBlobId(Buffer.from(`pointer ${sha}`))}"`, // the pointer file's id, not the content's
          'Content-Length': body.length,
        })
        .end(req.method === 'HEAD' ? undefined : body);
    }
    sendBytes(req, res, file.data, { ETag: `"${gitBlobId(file.data)}"`, 'X-Repo-Commit': repo.commit });
  });

  function sendBytes(req: http.IncomingMessage, res: http.ServerResponse, data: Buffer, headers: http.OutgoingHttpHeaders, sha?: string): void {
    const range = faults.ignoreRange ? null : /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    const start = range ? Number(range[1]) : 0;
    if (start >= data.length && range) return void res.writeHead(416, { 'Content-Range': `bytes */${data.length}` }).end();
    const body = data.subarray(start);
    res.writeHead(range ? 206 : 200, {
      ...headers,
      'Content-Length': body.length,
      ...(range ? { 'Content-Range': `bytes ${start}-${data.length - 1}/${data.length}` } : {}),
    });
    if (req.method === 'HEAD') return void res.end();
    const dropAt = req.method === 'GET' && sha ? faults.drop.get(sha) : undefined;
    if (dropAt === undefined) return void res.end(body);
    faults.drop.delete(sha!);
    // A stall, then the connection dies: the client has had time to store what came.
    res.write(body.subarray(0, dropAt), () => setTimeout(() => res.destroy(), 200));
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    log,
    faults,
    close: () => {
      server.closeAllConnections(); // keep-alive sockets would hold close() open
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
