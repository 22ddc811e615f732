import fs from 'node:fs';
import path from 'node:path';
import { DrError } from '../../errors.js';
import { cleanText, PY_SPACE } from './text_cleanup.js';

/**
 * GPT-2's bytes_to_unicode: byte -> a printable character, so BPE runs on strings. Printable
 * Latin-1 bytes stand for themselves, the rest take U+0100 onwards in byte order.
 */
const BYTE_CHARS = (() => {
  const chars: string[] = [];
  let next = 0x100;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
    chars.push(String.fromCharCode(printable ? b : next++));
  }
  return chars;
})();

const utf8 = new TextEncoder();
const byteEncode = (piece: string) => Array.from(utf8.encode(piece), (b) => BYTE_CHARS[b]).join('');
const escapeRegex = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

function readFile(file: string, what: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    throw new DrError(`${file}: missing (${what})`);
  }
}

function readJson(file: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new DrError(`${file}: not valid JSON (${(e as Error).message})`);
  }
}

/** A special token in tokenizer_config.json: a string or an AddedToken object `{content}`. */
function specialToken(config: Record<string, unknown>, key: string, fallback: string): string {
  const v = config[key];
  if (typeof v === 'string') return v;
  const content = (v as { content?: unknown } | undefined)?.content;
  return typeof content === 'string' ? content : fallback;
}

/**
 * CLIP's byte-level BPE tokenizer, reproducing OpenAI's `simple_tokenizer.py` and
 * `clip.tokenize` from a Hugging Face tokenizer folder (vocab.json + merges.txt).
 */
export class ClipTokenizer {
  readonly bosId: number;
  readonly eosId: number;
  readonly contextLength: number;
  /** Byte-encoded pre-token -> its BPE symbols. OpenAI seeds it with the special tokens, so
   *  "<|startoftext|>" typed in a prompt becomes the special token, not its characters. */
  private readonly cache = new Map<string, string[]>();
  private readonly pattern: RegExp;

  private constructor(
    private readonly vocab: Map<string, number>,
    /** "left right" -> merge priority (lower merges first). */
    private readonly ranks: Map<string, number>,
    bos: string,
    eos: string,
    contextLength: number,
  ) {
    this.bosId = vocab.get(bos)!;
    this.eosId = vocab.get(eos)!;
    this.contextLength = contextLength;
    this.cache.set(bos, [bos]);
    this.cache.set(eos, [eos]);
    // OpenAI's pre-split pattern (case-insensitive, Python's notion of whitespace).
    this.pattern = new RegExp(`${escapeRegex(bos)}|${escapeRegex(eos)}|'s|'t|'re|'ve|'m|'ll|'d|\\p{L}+|\\p{N}|` +
      `[^${PY_SPACE}\\p{L}\\p{N}]+`, 'giu');
  }

  /** Reads `<dir>/vocab.json`, `<dir>/merges.txt` and, if present, `<dir>/tokenizer_config.json`. */
  static fromDir(dir: string): ClipTokenizer {
    const vocabFile = path.join(dir, 'vocab.json');
    const json = readJson(vocabFile, readFile(vocabFile, 'CLIP tokenizer vocabulary'));
    if (typeof json !== 'object' || json === null || Array.isArray(json)) {
      throw new DrError(`${vocabFile}: expected an object mapping tokens to ids`);
    }
    const vocab = new Map<string, number>();
    for (const [token, id] of Object.entries(json)) {
      if (!Number.isInteger(id)) throw new DrError(`${vocabFile}: id of ${JSON.stringify(token)} is not an integer`);
      vocab.set(token, id as number);
    }

    const configFile = path.join(dir, 'tokenizer_config.json');
    const config = (fs.existsSync(configFile) ? readJson(configFile, readFile(configFile, 'tokenizer settings')) : {}) as
      Record<string, unknown>;
    const bos = specialToken(config, 'bos_token', '<|startoftext|>');
    const eos = specialToken(config, 'eos_token', '<|endoftext|>');
    // Every symbol BPE can produce must have an id: the specials and the bare byte characters
    // (here), and each merge result (below), so encode() can never miss.
    for (const token of [bos, eos, ...BYTE_CHARS, ...BYTE_CHARS.map((c) => `${c}</w>`)]) {
      if (!vocab.has(token)) throw new DrError(`${vocabFile}: no id for token ${JSON.stringify(token)}`);
    }

    const mergesFile = path.join(dir, 'merges.txt');
    const lines = readFile(mergesFile, 'CLIP tokenizer merges').trimEnd().split(/\r?\n/);
    const ranks = new Map<string, number>();
    lines.forEach((line, i) => {
      if (i === 0 && line.startsWith('#version')) return;
      const parts = line.split(' ');
      if (parts.length !== 2 || !parts[0] || !parts[1]) {
        throw new DrError(`${mergesFile}: line ${i + 1} is not a merge "left right": ${JSON.stringify(line)}`);
      }
      const missing = [parts[0], parts[1], parts[0] + parts[1]].find((t) => !vocab.has(t));
      if (missing !== undefined) {
        throw new DrError(`${mergesFile}: line ${i + 1} uses ${JSON.stringify(missing)}, which vocab.json lacks`);
      }
      ranks.set(line, i); // a repeated pair keeps its last rank, as in OpenAI's dict()
    });

    // transformers writes a huge sentinel (1e30) for "no limit"; CLIP's context is 77.
    const max = config.model_max_length;
    const contextLength = Number.isInteger(max) && (max as number) > 0 && (max as number) < 1e6 ? (max as number) : 77;
    return new ClipTokenizer(vocab, ranks, bos, eos, contextLength);
  }

  /** The BPE token strings of the cleaned text (as in the vocabulary, e.g. "photo</w>"). */
  tokens(text: string): string[] {
    const out: string[] = [];
    for (const [piece] of cleanText(text).matchAll(this.pattern)) out.push(...this.bpe(byteEncode(piece)));
    return out;
  }

  /** BPE ids of the cleaned text, without start/end tokens. */
  encode(text: string): number[] {
    return this.tokens(text).map((t) => this.vocab.get(t)!);
  }

  /** Tokens `tokenize` would need for the whole text, start and end tokens included (more than contextLength: cut). */
  tokenCount(text: string): number {
    return this.encode(text).length + 2;
  }

  /**
   * `[bos, ...ids, eos]`, cut like `clip.tokenize(truncate=True)` (to contextLength with the
   * last id replaced by eos) and padded with padId: eos by default as the diffusers /
   * transformers pipelines pad, 0 as OpenAI's clip.tokenize does.
   */
  tokenize(text: string, opts: { padId?: number; contextLength?: number } = {}): Int32Array {
    const n = opts.contextLength ?? this.contextLength;
    const ids = [this.bosId, ...this.encode(text), this.eosId];
    if (ids.length > n) {
      ids.length = n;
      ids[n - 1] = this.eosId;
    }
    const out = new Int32Array(n).fill(opts.padId ?? this.eosId);
    out.set(ids);
    return out;
  }

  private bpe(token: string): string[] {
    const cached = this.cache.get(token);
    if (cached) return cached;
    // Byte characters are all in the BMP, so UTF-16 units are symbols; the last marks the word end.
    let word = token.split('');
    word[word.length - 1] += '</w>';
    while (word.length > 1) {
      let best = -1;
      let bestRank = Infinity;
      for (let i = 0; i + 1 < word.length; i++) {
        const rank = this.ranks.get(`${word[i]} ${word[i + 1]}`);
        if (rank !== undefined && rank < bestRank) [best, bestRank] = [i, rank];
      }
      if (best < 0) break;
      const [left, right] = [word[best], word[best + 1]];
      const merged: string[] = [];
      for (let i = 0; i < word.length; i++) {
        if (word[i] === left && word[i + 1] === right) merged.push(left + word[++i]);
        else merged.push(word[i]);
      }
      word = merged;
    }
    this.cache.set(token, word);
    return word;
  }
}
