import fs from 'node:fs';
import path from 'node:path';
import { DrError } from '../errors.js';

/** A JSON config file whose missing or mistyped keys are reported with the file's name. */
export class ConfigFile {
  private constructor(readonly file: string, private readonly data: Record<string, unknown>, private readonly where = '') {}

  static read(file: string): ConfigFile {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch {
      throw new DrError(`${file}: missing (expected a Hugging Face config file here)`);
    }
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch (err) {
      throw new DrError(`${file}: not valid JSON (${(err as Error).message})`);
    }
    if (!data || typeof data !== 'object' || Array.isArray(data)) throw new DrError(`${file}: expected a JSON object`);
    return new ConfigFile(file, data as Record<string, unknown>);
  }

  static inDir(dir: string, name = 'config.json'): ConfigFile {
    return ConfigFile.read(path.join(dir, name));
  }

  /** The parsed object, for values with no typed accessor (lists, nulls). */
  get raw(): Readonly<Record<string, unknown>> {
    return this.data;
  }

  has(key: string): boolean {
    return this.data[key] !== undefined && this.data[key] !== null;
  }

  /** A nested object such as `text_config`. */
  section(key: string): ConfigFile {
    const v = this.data[key];
    if (!v || typeof v !== 'object' || Array.isArray(v)) throw this.error(key, 'an object');
    return new ConfigFile(this.file, v as Record<string, unknown>, `${this.where}${key}.`);
  }

  int(key: string, fallback?: number): number {
    const v = this.data[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw this.error(key, 'a non-negative integer');
    return v;
  }

  num(key: string, fallback?: number): number {
    const v = this.data[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw this.error(key, 'a number');
    return v;
  }

  str(key: string, fallback?: string): string {
    const v = this.data[key] ?? fallback;
    if (typeof v !== 'string') throw this.error(key, 'a string');
    return v;
  }

  private error(key: string, what: string): DrError {
    const v = this.data[key];
    return new DrError(
      v === undefined ? `${this.file}: missing key "${this.where}${key}"` : `${this.file}: "${this.where}${key}" must be ${what}, got ${JSON.stringify(v)}`,
    );
  }
}
