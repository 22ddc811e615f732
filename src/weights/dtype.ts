// Raw tensor bytes (little-endian, from a fresh aligned buffer) → f32 or int32, for every
// tensor source (safetensors, PyTorch files).
import { DrError } from '../errors.js';
import { f16ToF32 } from '../engine/half.js';
import type { StDtype } from './safetensors.js';

let f16Table: Float32Array | undefined;

function view(dtype: StDtype, b: ArrayBufferLike) {
  switch (dtype) {
    case 'F64': return new Float64Array(b);
    case 'F32': return new Float32Array(b);
    case 'I64': return new BigInt64Array(b);
    case 'U64': return new BigUint64Array(b);
    case 'I32': return new Int32Array(b);
    case 'U32': return new Uint32Array(b);
    case 'I16': return new Int16Array(b);
    case 'F16': case 'BF16': case 'U16': return new Uint16Array(b);
    case 'I8': return new Int8Array(b);
    case 'U8': case 'BOOL': return new Uint8Array(b);
  }
}

export function bytesToF32(dtype: StDtype, bytes: Uint8Array): Float32Array {
  const src = view(dtype, bytes.buffer);
  if (dtype === 'F32') return src as Float32Array;
  const out = new Float32Array(src.length);
  if (dtype === 'F16') {
    if (!f16Table) {
      f16Table = new Float32Array(65536); // one lookup per value for big tensors
      for (let i = 0; i < 65536; i++) f16Table[i] = f16ToF32(i);
    }
    for (let i = 0; i < src.length; i++) out[i] = f16Table[src[i] as number];
  } else if (dtype === 'BF16') {
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < src.length; i++) bits[i] = (src[i] as number) << 16;
  } else {
    for (let i = 0; i < src.length; i++) out[i] = Number(src[i]);
  }
  return out;
}

/** `what` names the file and tensor in errors. */
export function bytesToInt32(dtype: StDtype, bytes: Uint8Array, what: string): Int32Array {
  if (dtype === 'F64' || dtype === 'F32' || dtype === 'F16' || dtype === 'BF16') {
    throw new DrError(`${what} has dtype ${dtype}, expected an integer dtype`);
  }
  const src = view(dtype, bytes.buffer);
  if (dtype === 'I32') return src as Int32Array;
  const out = new Int32Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const v = Number(src[i]);
    if (v < -0x80000000 || v > 0x7fffffff) throw new DrError(`${what} (${dtype}) value ${src[i]} at index ${i} does not fit in int32`);
    out[i] = v;
  }
  return out;
}
