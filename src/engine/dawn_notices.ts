import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isMainThread } from 'node:worker_threads';

/**
 * Dawn clamps the adapter limits maxDynamic{Uniform,Storage}BuffersPerPipelineLayout to 16 when
 * a Vulkan driver reports more (lavapipe: 1000000, RADV: 500000) and says so on stderr, from C++
 * (fprintf), while it enumerates adapters: on every command, whatever limits are requested later
 * (the clamped value is what dr requests anyway). Exactly these two lines are dropped.
 */
const CLAMP_NOTICE = /^Warning: maxDynamic(Uniform|Storage)BuffersPerPipelineLayout artificially reduced from \d+ to \d+ to fit dynamic offset allocation limit\.$/;

const O_APPEND = fs.constants.O_APPEND;

/**
 * Runs `call` (a synchronous Dawn call that enumerates adapters) with file descriptor 2 pointing
 * at a temporary file, then puts stderr back and writes everything Dawn printed except the two
 * clamp notices. Node cannot dup2, so stderr is reopened through /proc/self/fd (Linux), which
 * is done only where reopening writes to the same place in the same way: a terminal or other
 * character device, a pipe that still has a reader, or a file opened for appending. Anywhere
 * else (another OS, a socket, a file written at an offset that a reopened copy would not share)
 * Dawn's lines are left as they are. Between closing fd 2 and reopening it nothing else may open
 * a file (it would get fd 2): only the main thread does this, around a synchronous call.
 */
export function filterDawnNotices<T>(call: () => T): T {
  const saved = reopenStderr();
  if (saved === undefined) return call();
  const tmp = path.join(os.tmpdir(), `.dr-dawn-${process.pid}.log`);
  fs.closeSync(2);
  let fd: number | undefined;
  try {
    // The lowest free descriptor, 2 (0 and 1 are open); 'wx+': a new file, never one planted there.
    fd = fs.openSync(tmp, 'wx+', 0o600);
  } catch {
    // no temporary file: Dawn's lines go to stderr as they are
  }
  if (fd !== 2) {
    if (fd !== undefined) fs.closeSync(fd);
    putBack(saved);
    return call();
  }
  try {
    return call();
  } finally {
    fs.closeSync(2);
    putBack(saved);
    const printed = fs.readFileSync(tmp, 'utf8');
    fs.rmSync(tmp, { force: true });
    const kept = printed.split('\n').filter((l, i, all) => !CLAMP_NOTICE.test(l) && (l !== '' || i < all.length - 1));
    try {
      if (kept.length) fs.writeSync(2, `${kept.join('\n')}\n`);
    } catch {
      // stderr gone or full: Dawn's other notices are lost, the command goes on
    }
  }
}

/** Reopens the saved stderr as fd 2 (the lowest free descriptor again). */
function putBack(saved: number): void {
  const back = fs.openSync(`/proc/self/fd/${saved}`, fs.constants.O_WRONLY | O_APPEND | fs.constants.O_NONBLOCK);
  fs.closeSync(saved);
  if (back !== 2) fs.closeSync(back); // only if another thread took fd 2: stderr is then lost, not misdirected
}

/** A second descriptor for what fd 2 writes to, where reopening it is faithful (see above); undefined elsewhere. */
function reopenStderr(): number | undefined {
  // Worker threads share the descriptor table: another thread could take fd 2 while it is free.
  if (process.platform !== 'linux' || !isMainThread) return undefined;
  try {
    fs.fstatSync(0);
    fs.fstatSync(1);
    const st = fs.fstatSync(2);
    const flags = parseInt(/^flags:\s*([0-7]+)/m.exec(fs.readFileSync('/proc/self/fdinfo/2', 'utf8'))?.[1] ?? '', 8);
    if (!(st.isCharacterDevice() || st.isFIFO() || (st.isFile() && flags & O_APPEND))) return undefined;
    // O_NONBLOCK: a pipe whose reader is gone fails here (ENXIO) instead of blocking forever.
    return fs.openSync('/proc/self/fd/2', fs.constants.O_WRONLY | O_APPEND | fs.constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
}
