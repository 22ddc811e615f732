// A kernel's WGSL source with its `//!include`s expanded, and the interface the
// engine binds by name: the storage `@binding`s and the fields of `struct Params`.

/** Scalar element types a binding may declare directly (anything else is a per-binding alias). */
const WGSL_SCALARS = new Set(['f32', 'f16', 'i32', 'u32']);

export interface StorageBinding {
  binding: number;
  name: string;
  /** Declared element type: a scalar, or an alias such as `TX` the engine defines per dispatch. */
  elem: string;
  /** `read_write`: the dispatch may change the tensor. */
  write: boolean;
}

/** A texture binding: sampled `texture_2d<f32|u32>` (read with textureLoad) or a write-only storage texture. */
export interface TextureBinding {
  binding: number;
  name: string;
  storage: boolean;
}

export interface UniformField {
  name: string;
  kind: 'u32' | 'i32' | 'f32';
  /** 1 for a scalar, 4·n for `array<vec4<kind>, n>`. */
  count: number;
  /** Byte offset in the uniform buffer (WGSL uniform layout). */
  offset: number;
}

export interface KernelInterface {
  /** Storage bindings ordered by binding number (binding 0 is the uniform `Params`). */
  bindings: StorageBinding[];
  /** Texture bindings, numbered after the storage buffers. */
  textures: TextureBinding[];
  /** `struct Params` fields in declaration order; undefined when the kernel has none. */
  params?: UniformField[];
  /** Size of `Params` rounded to 16 bytes. */
  paramBytes: number;
}

/**
 * Pastes each `//!include name.wgsl` helper once per kernel (a helper included by two
 * others would otherwise define its functions twice) and rejects include cycles.
 */
export function expandIncludes(kernel: string, read: (name: string) => string): string {
  const seen = new Set<string>([kernel]);
  const expand = (name: string, stack: string[]): string =>
    read(name).replace(/^\/\/!include (\S+)\.wgsl$/gm, (_, inc: string) => {
      if (stack.includes(inc)) throw new Error(`wgsl include cycle: ${[...stack, inc].join(' → ')}`);
      if (seen.has(inc)) return `// ${inc}.wgsl: already included`;
      seen.add(inc);
      return expand(inc, [...stack, inc]);
    });
  return expand(kernel, [kernel]);
}

/** Reads the bindings and `struct Params` of an expanded kernel source. */
export function parseInterface(kernel: string, source: string): KernelInterface {
  const code = source.replace(/\/\/.*$/gm, '');
  const bindings: StorageBinding[] = [];
  const bindingRe = /@group\(0\)\s*@binding\((\d+)\)\s*var<storage\s*,\s*(read|read_write)\s*>\s*(\w+)\s*:\s*array<\s*(\w+)\s*>/g;
  for (const m of code.matchAll(bindingRe)) bindings.push({ binding: Number(m[1]), name: m[3], elem: m[4], write: m[2] === 'read_write' });
  bindings.sort((a, b) => a.binding - b.binding);
  bindings.forEach((b, i) => {
    if (b.binding !== i + 1) throw new Error(`${kernel}.wgsl: storage bindings must be numbered 1..n, found @binding(${b.binding}) ${b.name}`);
  });
  const textures: TextureBinding[] = [];
  const textureRe = /@group\(0\)\s*@binding\((\d+)\)\s*var\s+(\w+)\s*:\s*(texture_2d<\s*(?:f32|u32)\s*>|texture_storage_2d<\s*rgba32(?:float|uint)\s*,\s*write\s*>)/g;
  for (const m of code.matchAll(textureRe)) textures.push({ binding: Number(m[1]), name: m[2], storage: m[3].startsWith('texture_storage') });
  textures.sort((a, b) => a.binding - b.binding);
  textures.forEach((t, i) => {
    if (t.binding !== bindings.length + i + 1) throw new Error(`${kernel}.wgsl: texture bindings must follow the storage buffers, found @binding(${t.binding}) ${t.name}`);
  });
  const declared = (code.match(/@binding\(/g) ?? []).length;
  const hasUniform = /@binding\(0\)\s*var<uniform>\s*\w+\s*:\s*Params\s*;/.test(code);
  if (declared !== bindings.length + textures.length + (hasUniform ? 1 : 0)) {
    throw new Error(`${kernel}.wgsl: a binding is neither \`var<uniform> p: Params\` at 0, \`var<storage, …> name: array<T>\` nor a 2-D texture`);
  }

  // Aliases share WGSL's one namespace with constants: `k: array<TK>` next to `const TK` would not compile.
  const consts = new Set([...code.matchAll(/\bconst\s+(\w+)/g)].map((m) => m[1]));
  for (const b of bindings) {
    if (!WGSL_SCALARS.has(b.elem) && consts.has(b.elem)) {
      throw new Error(`${kernel}.wgsl: element type ${b.elem} of binding ${b.name} collides with a constant of that name`);
    }
  }

  const struct = /struct\s+Params\s*\{([^}]*)\}/.exec(code);
  if (!struct) {
    if (hasUniform) throw new Error(`${kernel}.wgsl: binds Params but declares no struct Params`);
    return { bindings, textures, paramBytes: 0 };
  }
  const params: UniformField[] = [];
  let offset = 0;
  const fieldRe = /(\w+)\s*:\s*(?:(u32|i32|f32)|array<\s*vec4<\s*(u32|i32|f32)\s*>\s*,\s*(\d+)u?\s*>)\s*(?:,|$)/g;
  const rest = struct[1].replace(fieldRe, (_, name: string, scalar?: string, vecKind?: string, n?: string) => {
    const count = scalar ? 1 : 4 * Number(n);
    offset = Math.ceil(offset / (scalar ? 4 : 16)) * (scalar ? 4 : 16);
    params.push({ name, kind: (scalar ?? vecKind) as UniformField['kind'], count, offset });
    offset += 4 * count;
    return '';
  });
  if (rest.trim()) throw new Error(`${kernel}.wgsl: unsupported struct Params field near "${rest.trim().slice(0, 40)}"`);
  return { bindings, textures, params, paramBytes: Math.ceil(offset / 16) * 16 };
}
