/**
 * Finding the state dict inside a PyTorch checkpoint as they come: bare
 * (`torch.save(model.state_dict())`), Lightning's `{'state_dict': ..., 'epoch': ...}`,
 * `{'model': ...}`, `{'params': ..., 'params_ema': ...}` and so on. A dict whose
 * values are all tensors is a state dict; when there is more than one and the
 * caller named none, loading stops and lists them rather than guessing (an EMA
 * copy and the raw weights are both "the model").
 */
import { DrError } from '../errors.js';
import { PyDict } from './pickle.js';
import { TorchTensor } from './torch.js';

export interface StateDict {
  tensors: Map<string, TorchTensor>;
  /** Where it was: '' for the top level, else the key path such as `state_dict` or `model/ema`. */
  where: string;
  /** `module.` when DataParallel's prefix was removed from every key. */
  strippedPrefix: string;
}

/** How deep under the top level to look for nested state dicts. */
const MAX_DEPTH = 2;

export function findStateDict(path: string, root: unknown, key?: string): StateDict {
  if (!(root instanceof PyDict)) throw new DrError(`${path}: holds a ${describe(root)}, not a dict of tensors`);
  if (key !== undefined) {
    let d: unknown = root;
    for (const part of key.split('/')) {
      if (!(d instanceof PyDict) || !d.map.has(part)) throw new DrError(`${path}: no entry "${key}" (top-level keys: ${keysOf(root)})`);
      d = d.map.get(part);
    }
    if (!isTensorDict(d)) throw new DrError(`${path}: entry "${key}" is a ${describe(d)}, not a dict of tensors`);
    return finish(d as PyDict, key);
  }
  const found: { where: string; dict: PyDict }[] = [];
  const walk = (d: PyDict, where: string, depth: number): void => {
    if (isTensorDict(d)) {
      found.push({ where, dict: d });
      return;
    }
    if (depth === MAX_DEPTH) return;
    for (const [k, v] of d.map) if (typeof k === 'string' && v instanceof PyDict) walk(v, where ? `${where}/${k}` : k, depth + 1);
  };
  walk(root, '', 0);
  if (found.length === 1) return finish(found[0].dict, found[0].where);
  if (!found.length) throw new DrError(`${path}: no state dict (a dict whose values are all tensors) found; top-level keys: ${keysOf(root)}`);
  throw new DrError(`${path}: holds ${found.length} state dicts (${found.map((f) => `"${f.where}"`).join(', ')}); choose one with --key`);
}

function isTensorDict(d: unknown): boolean {
  if (!(d instanceof PyDict) || d.map.size === 0) return false;
  for (const [k, v] of d.map) if (typeof k !== 'string' || !(v instanceof TorchTensor)) return false;
  return true;
}

function finish(d: PyDict, where: string): StateDict {
  const names = [...d.map.keys()] as string[];
  const strippedPrefix = names.every((n) => n.startsWith('module.')) ? 'module.' : '';
  const tensors = new Map<string, TorchTensor>();
  for (const [k, v] of d.map) tensors.set((k as string).slice(strippedPrefix.length), v as TorchTensor);
  return { tensors, where, strippedPrefix };
}

function keysOf(d: PyDict): string {
  const keys = [...d.map.keys()].map((k) => JSON.stringify(k));
  return keys.length ? keys.slice(0, 12).join(', ') + (keys.length > 12 ? ', ...' : '') : '(none)';
}

function describe(v: unknown): string {
  if (v instanceof PyDict) return 'dict whose values are not all tensors';
  if (Array.isArray(v)) return 'list';
  if (v instanceof TorchTensor) return 'single tensor';
  return v === null ? 'None' : typeof v === 'object' ? (v.constructor?.name ?? 'object') : typeof v;
}
