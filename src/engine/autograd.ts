// Reverse-mode gradients on an eager tape that the Engine records while `grad` runs a
// forward pass (README, design notes: "Gradients"). Ops stay free functions: a
// differentiable op calls `e.record(...)` after its dispatches, only when `e.needsGrad`
// says one of its inputs requires a gradient, with a closure over its backward function
// (`xxxBackward(e, <inputs and saved tensors>, dy, needs)`, beside the forward).
import type { Engine } from './engine.js';
import { Tensor } from './tensor.js';
import { addInto } from './ops/adamw.js';
import { add, scale } from './ops/elementwise.js';

/**
 * A backward closure: the gradient at the op's output (shaped like it) and, per input,
 * whether that input needs a gradient → one gradient (or undefined) per input. It may
 * return dy itself or views of it; it must not write into dy.
 */
export type Backward = (dy: Tensor, needs: readonly boolean[]) => readonly (Tensor | undefined)[];

interface Node {
  op: string;
  inputs: readonly (Tensor | undefined)[];
  output: Tensor;
  saved: readonly Tensor[];
  backward: Backward;
}

const base = (t: Tensor): Tensor => t.base ?? t;

/**
 * The nodes of one forward pass. Tensors are identified by the tensor owning their buffer
 * (reshape views share their base's gradient, flat). Saved tensors that a tidy scope would
 * have released are pinned here instead and released once no later backward reads them.
 */
export class Tape {
  readonly nodes: Node[] = [];
  private readonly requires = new Set<Tensor>();
  /** Saved tensors the tape owns → how many pending backwards read them. */
  private readonly pins = new Map<Tensor, number>();
  /** Saved tensors owned elsewhere (weights, inputs, tensors kept by the caller). */
  private readonly borrowed = new Map<Tensor, number>();

  /** Scopes open before the forward: their tensors stay theirs (the tape only borrows them). */
  private readonly depth: number;

  constructor(private readonly e: Engine, params: readonly Tensor[]) {
    for (const p of params) this.requires.add(base(p));
    this.depth = e.scopeDepth;
  }

  requiresGrad(t: Tensor): boolean {
    return this.requires.has(base(t));
  }

  record(op: string, inputs: readonly (Tensor | undefined)[], output: Tensor, saved: readonly Tensor[], backward: Backward): void {
    if (!inputs.some((t) => t && this.requiresGrad(t))) return;
    this.requires.add(base(output));
    for (const t of saved) {
      const b = base(t);
      if (this.pins.has(b)) this.pins.set(b, this.pins.get(b)! + 1);
      else if (this.borrowed.has(b)) this.borrowed.set(b, this.borrowed.get(b)! + 1);
      else if (this.e.takeFromScopes(b, this.depth)) this.pins.set(b, 1);
      else this.borrowed.set(b, 1);
    }
    this.nodes.push({ op, inputs, output, saved, backward });
  }

  /** The caller kept t (e.keep): it is no longer the tape's to release. */
  disown(t: Tensor): void {
    const b = base(t);
    const n = this.pins.get(b);
    if (n === undefined) return;
    this.pins.delete(b);
    this.borrowed.set(b, n);
  }

  /** One backward read a node's saved tensors: release those nobody reads any more. */
  unpin(saved: readonly Tensor[]): void {
    for (const t of saved) {
      const b = base(t);
      const n = this.pins.get(b);
      if (n === undefined) {
        this.borrowed.set(b, this.borrowed.get(b)! - 1);
      } else if (n > 1) {
        this.pins.set(b, n - 1);
      } else {
        this.pins.delete(b);
        this.e.release(b);
      }
    }
  }

  /** Bytes of the saved tensors the tape owns (the activations kept for the backward). */
  get pinnedBytes(): number {
    let n = 0;
    for (const b of this.pins.keys()) n += b.byteLength;
    return n;
  }

  isPinned(t: Tensor): boolean {
    const b = base(t);
    return this.pins.has(b) || this.borrowed.has(b) || this.requires.has(b);
  }

  /** Releases what is still pinned (a backward that stopped early, or nodes never reached). */
  releaseAll(): void {
    for (const b of this.pins.keys()) this.e.release(b);
    this.pins.clear();
    this.borrowed.clear();
  }
}

export interface GradResult {
  /** The scalar the gradients are of (the caller releases it). */
  loss: Tensor;
  /** d loss / d param per param, shaped like it; undefined where the loss does not depend on it (torch's None). */
  grads: (Tensor | undefined)[];
  /** Ops recorded, and the bytes of activations the tape kept from the forward for the backward. */
  stats: { nodes: number; savedBytes: number };
}

/**
 * Runs `fn` (a forward pass returning a one-element loss) with the tape on, then walks the
 * tape backwards: gradients w.r.t. `params`, computed only along paths from a param (frozen
 * weights get none, but gradients flow through them). Activation gradients are released as
 * soon as their producer's backward ran, saved tensors once their last reader ran.
 * Returned gradients are owned by the caller (outside every tidy scope).
 */
export function grad(e: Engine, fn: () => Tensor, params: readonly Tensor[]): GradResult {
  if (e.tape) throw new Error('grad: already recording (nested grad is not supported)');
  const tape = new Tape(e, params);
  e.tape = tape;
  let loss: Tensor;
  try {
    loss = e.tidy(fn);
  } catch (err) {
    tape.releaseAll();
    throw err;
  } finally {
    e.tape = undefined;
  }
  e.takeFromScopes(base(loss));
  tape.disown(loss);
  const stats = { nodes: tape.nodes.length, savedBytes: tape.pinnedBytes };
  try {
    if (loss.size !== 1) throw new Error(`grad: the loss must have one element, got ${loss}`);
    const grads = new Map<Tensor, Tensor>();
    if (tape.requiresGrad(loss)) {
      grads.set(base(loss), e.upload(Float32Array.of(1), loss.shape, loss.dtype));
      e.takeFromScopes(grads.get(base(loss))!);
      backward(e, tape, grads);
    }
    // Two params may hold one buffer (add's backward passes dy itself to each operand of dy's shape:
    // x + a + c gives a and c the same tensor); each returned gradient owns its own, or the caller
    // would release one buffer twice and the pool later hand it to two tensors at once.
    const given = new Set<Tensor>();
    return {
      loss,
      grads: params.map((p) => {
        const g = grads.get(base(p));
        if (g && given.has(base(g))) {
          const copy = scale(e, g, 1); // g·1 + 0: exact
          e.takeFromScopes(copy);
          return owning(copy, p.shape);
        }
        if (g) given.add(base(g));
        return owning(g, p.shape);
      }),
      stats,
    };
  } finally {
    tape.releaseAll();
  }
}

/** g as a tensor of `shape` that owns its buffer (the caller releases it; a view would release nothing). */
function owning(g: Tensor | undefined, shape: readonly number[]): Tensor | undefined {
  if (!g) return undefined;
  const b = base(g);
  return b.shape.join() === shape.join() ? b : new Tensor(b.buffer, shape, b.dtype, b.pooled);
}

/**
 * Activation checkpointing: y = fn(...inputs) without keeping fn's intermediates for the
 * backward, which runs fn again under a tape of its own (memory for compute: a control network
 * block's activations live only during its own backward). `inputs` must list every tensor fn
 * reads that may need a gradient, its trainable params included; fn must be deterministic.
 */
export function checkpoint(e: Engine, fn: (...xs: Tensor[]) => Tensor, inputs: readonly Tensor[]): Tensor {
  const outer = e.tape;
  if (!outer || !inputs.some((t) => outer.requiresGrad(t))) return fn(...inputs);
  e.tape = undefined;
  let y: Tensor;
  try {
    y = e.tidy(() => fn(...inputs));
  } finally {
    e.tape = outer;
  }
  e.record('checkpoint', inputs, y, inputs, (dy, needs) => {
    const inner = new Tape(e, inputs.filter((_, i) => needs[i]));
    e.tape = inner;
    try {
      let out: Tensor;
      try {
        out = e.tidy(() => fn(...inputs));
      } finally {
        e.tape = undefined;
      }
      const grads = new Map<Tensor, Tensor>();
      if (inner.requiresGrad(out)) {
        grads.set(base(out), dy.reshape(out.shape));
        backward(e, inner, grads, dy);
      }
      // One gradient per distinct input (a tensor listed twice must not count twice).
      return inputs.map((t, i) => (needs[i] && inputs.findIndex((u) => base(u) === base(t)) === i ? grads.get(base(t))?.reshape(t.shape) : undefined));
    } finally {
      inner.releaseAll();
    }
  });
  return y;
}

/** Walks the tape backwards from the gradients in `grads`; `seed`'s buffer belongs to the caller. */
function backward(e: Engine, tape: Tape, grads: Map<Tensor, Tensor>, seed?: Tensor): void {
  // Buffers the gradient map holds (several entries may share one: add's backward returns dy twice).
  const holders = new Map<Tensor, number>();
  const hold = (g: Tensor): void => void holders.set(base(g), (holders.get(base(g)) ?? 0) + 1);
  /** Releases g's buffer unless the map or the tape still holds it. */
  const free = (g: Tensor): void => {
    if (!holders.has(base(g)) && !tape.isPinned(g) && (!seed || base(g) !== base(seed))) e.release(base(g));
  };
  const drop = (g: Tensor): void => {
    const b = base(g);
    const n = holders.get(b)! - 1;
    if (n > 0) holders.set(b, n);
    else holders.delete(b);
    free(b);
  };
  for (const g of grads.values()) hold(g);

  for (let i = tape.nodes.length - 1; i >= 0; i--) {
    const node = tape.nodes[i];
    const key = base(node.output);
    const dy = grads.get(key);
    if (!dy) {
      // The loss does not depend on this output.
      tape.unpin(node.saved);
      continue;
    }
    grads.delete(key);
    const needs = node.inputs.map((t) => !!t && tape.requiresGrad(t));
    const result = e.tidy(() => node.backward(dy.reshape(node.output.shape), needs));
    for (const g of result) if (g) e.takeFromScopes(base(g));
    node.inputs.forEach((input, j) => {
      const g = result[j];
      if (!input || !g || !needs[j]) return;
      accumulate(e, grads, base(input), g, holders, hold, drop, seed);
    });
    // Results not asked for (or summed into another gradient) go back to the pool.
    for (const g of result) if (g) free(g);
    drop(dy);
    tape.unpin(node.saved);
  }
  tape.nodes.length = 0;
}

function accumulate(
  e: Engine, grads: Map<Tensor, Tensor>, key: Tensor, g: Tensor,
  holders: Map<Tensor, number>, hold: (g: Tensor) => void, drop: (g: Tensor) => void, seed?: Tensor,
): void {
  // g is freed by the caller unless held: only the map's own entries count.
  const prev = grads.get(key);
  if (!prev) {
    grads.set(key, g);
    hold(g);
    return;
  }
  // In place when the running sum is an f32 buffer of its own; otherwise a new sum.
  if (prev.dtype === 'f32' && holders.get(base(prev)) === 1 && base(prev) !== base(g) && (!seed || base(prev) !== base(seed))) {
    addInto(e, prev, g);
    return;
  }
  const sum = e.tidy(() => add(e, prev.reshape(g.shape), g));
  e.takeFromScopes(sum);
  drop(prev);
  grads.set(key, sum);
  hold(sum);
}

