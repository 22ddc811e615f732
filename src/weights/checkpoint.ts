/**
 * One model's weights, whatever the file layout: a single .safetensors file, a
 * Hugging Face folder (model.safetensors / diffusion_pytorch_model.safetensors), a
 * sharded folder described by `*.safetensors.index.json`, or a PyTorch .pth/.ckpt/.bin
 * file (read by the restricted unpickler, never executed).
 */
import fs from 'node:fs';
import nodePath from 'node:path';
import { DrError } from '../errors.js';
import { bytesToF32, bytesToInt32 } from './dtype.js';
import { SafetensorsFile, type StDtype } from './safetensors.js';
import { findStateDict, type StateDict } from './state_dict.js';
import { looksLikeTorch, openTorchFile, type TorchFormat } from './torch.js';

/** What a checkpoint knows of a tensor before reading it. */
export interface TensorEntry {
  name: string;
  dtype: StDtype;
  shape: number[];
  byteLength: number;
  /** The file the bytes come from. */
  file: string;
}

/** A file of named tensors: SafetensorsFile, a torch state dict, or a renamed view of one. */
export interface TensorSource {
  readonly path: string;
  readonly tensors: ReadonlyMap<string, TensorEntry>;
  /** The tensor's row-major bytes in a fresh buffer (so typed-array views on it are aligned). */
  readBytes(name: string): Uint8Array;
  close(): void;
}

/** A PyTorch checkpoint's state dict as a tensor source; tensors are read one at a time. */
export class TorchSource implements TensorSource {
  readonly tensors = new Map<string, TensorEntry>();

  private constructor(
    readonly path: string,
    readonly format: TorchFormat,
    readonly stateDict: StateDict,
    readonly close: () => void,
  ) {
    for (const [name, t] of stateDict.tensors) this.tensors.set(name, { name, dtype: t.dtype, shape: t.shape, byteLength: t.byteLength, file: path });
  }

  /** `key` names the state dict when the file holds several (`state_dict`, `model/ema`). */
  static open(path: string, key?: string): TorchSource {
    const f = openTorchFile(path);
    try {
      return new TorchSource(path, f.format, findStateDict(path, f.root, key), f.close);
    } catch (e) {
      f.close();
      throw e;
    }
  }

  readBytes(name: string): Uint8Array {
    const t = this.stateDict.tensors.get(name);
    if (!t) throw new DrError(`${this.path}: no tensor named "${name}"`);
    return t.read();
  }
}

const SINGLE_FILE_NAMES = ['model.safetensors', 'diffusion_pytorch_model.safetensors'];

/** One weights file: safetensors, or a torch pickle (`key` picks among several state dicts). */
export function openTensorFile(path: string, key?: string): TensorSource {
  if (!fs.existsSync(path)) throw new DrError(`${path}: no such file`);
  if (!path.endsWith('.safetensors') && looksLikeTorch(path)) return TorchSource.open(path, key);
  // A safetensors file is one flat set of tensors: a --key would silently do nothing.
  if (key !== undefined) throw new DrError(`--key ${key}: ${path} is a safetensors file, one set of tensors; --key picks a state dict in a PyTorch file (.pth, .ckpt, .bin)`);
  return SafetensorsFile.open(path);
}

export class Checkpoint {
  private constructor(
    /** What the user named (file or folder); used in error messages. */
    readonly path: string,
    private readonly files: TensorSource[],
    private readonly byTensor: Map<string, TensorSource>,
  ) {}

  /** A checkpoint over one tensor source (a converted single-file component, say). */
  static fromSource(label: string, source: TensorSource): Checkpoint {
    return new Checkpoint(label, [source], new Map([...source.tensors.keys()].map((k) => [k, source])));
  }

  static open(pathOrDir: string): Checkpoint {
    let stat: fs.Stats;
    try {
      stat = fs.statSync(pathOrDir);
    } catch {
      throw new DrError(`${pathOrDir}: no such file or folder`);
    }
    if (!stat.isDirectory()) {
      if (pathOrDir.endsWith('.index.json')) return Checkpoint.openIndex(pathOrDir, pathOrDir);
      return Checkpoint.fromSource(pathOrDir, openTensorFile(pathOrDir));
    }

    const names = fs.readdirSync(pathOrDir);
    const found = names.filter((n) => SINGLE_FILE_NAMES.includes(n) || n.endsWith('.safetensors.index.json'));
    if (found.length > 1) {
      throw new DrError(`${pathOrDir}: found ${found.join(' and ')}; expected exactly one of them`);
    }
    if (found.length === 1) {
      const file = nodePath.join(pathOrDir, found[0]);
      return found[0].endsWith('.index.json') ? Checkpoint.openIndex(pathOrDir, file) : Checkpoint.fromSource(pathOrDir, SafetensorsFile.open(file));
    }
    // Fallback for hand-made folders holding one arbitrarily named file.
    const any = names.filter((n) => n.endsWith('.safetensors'));
    if (any.length === 1) return Checkpoint.fromSource(pathOrDir, SafetensorsFile.open(nodePath.join(pathOrDir, any[0])));
    if (any.length > 1) {
      throw new DrError(
        `${pathOrDir}: several .safetensors files (${any.join(', ')}) but no *.safetensors.index.json saying how they fit together`,
      );
    }
    throw new DrError(
      `${pathOrDir}: no model.safetensors, diffusion_pytorch_model.safetensors or *.safetensors.index.json found`,
    );
  }

  private static openIndex(label: string, indexPath: string): Checkpoint {
    let index: unknown;
    try {
      index = JSON.parse(fs.readFileSync(indexPath, 'utf-8'));
    } catch (e) {
      throw new DrError(`${indexPath}: cannot read shard index: ${(e as Error).message}`);
    }
    const weightMap = (index as { weight_map?: unknown } | null)?.weight_map;
    if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
      throw new DrError(`${indexPath}: shard index has no "weight_map" object`);
    }

    const dir = nodePath.dirname(indexPath);
    const shards = new Map<string, SafetensorsFile>();
    const byTensor = new Map<string, SafetensorsFile>();
    try {
      for (const [tensor, shard] of Object.entries(weightMap)) {
        if (typeof shard !== 'string') {
          throw new DrError(`${indexPath}: weight_map entry for "${tensor}" is not a file name`);
        }
        let f = shards.get(shard);
        if (!f) {
          const shardPath = nodePath.join(dir, shard);
          if (!fs.existsSync(shardPath)) {
            throw new DrError(`${indexPath}: shard "${shard}" listed in the index is missing (${shardPath})`);
          }
          f = SafetensorsFile.open(shardPath);
          shards.set(shard, f);
        }
        if (!f.tensors.has(tensor)) {
          throw new DrError(`${indexPath}: index maps tensor "${tensor}" to shard "${shard}" but that shard has no such tensor`);
        }
        byTensor.set(tensor, f);
      }
    } catch (e) {
      for (const f of shards.values()) f.close();
      throw e;
    }
    return new Checkpoint(label, [...shards.values()], byTensor);
  }

  keys(): string[] {
    return [...this.byTensor.keys()];
  }

  has(name: string): boolean {
    return this.byTensor.has(name);
  }

  info(name: string): TensorEntry {
    return this.fileOf(name).tensors.get(name)!;
  }

  readBytes(name: string): Uint8Array {
    return this.fileOf(name).readBytes(name);
  }

  readF32(name: string): Float32Array {
    return bytesToF32(this.info(name).dtype, this.readBytes(name));
  }

  readInt32(name: string): Int32Array {
    return bytesToInt32(this.info(name).dtype, this.readBytes(name), `${this.path}: tensor "${name}"`);
  }

  close(): void {
    for (const f of this.files) f.close();
  }

  private fileOf(name: string): TensorSource {
    const f = this.byTensor.get(name);
    if (!f) throw new DrError(`${this.path}: checkpoint has no tensor "${name}"`);
    return f;
  }
}
