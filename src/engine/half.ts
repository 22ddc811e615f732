// IEEE 754 half and bfloat16 conversions on the host (weight loading, uploads, readbacks).
const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** IEEE half bits -> number; exact for every value incl. subnormals, ±inf, NaN. */
export function f16ToF32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 31) return mant ? NaN : sign * Infinity;
  return sign * (1024 + mant) * 2 ** (exp - 25);
}

/**
 * number -> IEEE half bits, round to nearest, ties to even. `x` is taken as an f32
 * (rounded to f32 first), which is what it is everywhere in this project.
 */
export function f32ToF16Bits(x: number): number {
  scratchF32[0] = x;
  const b = scratchU32[0];
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0); // inf, quiet NaN
  const e = exp - 112; // rebias 127 -> 15
  if (e >= 31) return sign | 0x7c00;
  let r: number;
  let rem: number;
  let half: number;
  if (e > 0) {
    r = (e << 10) | (mant >>> 13);
    rem = mant & 0x1fff;
    half = 0x1000;
  } else {
    if (e < -10) return sign; // below half the smallest subnormal: rounds to ±0
    const m = mant | 0x800000; // explicit leading 1
    const shift = 14 - e; // half subnormal unit is 2^-24
    r = m >>> shift;
    rem = m & ((1 << shift) - 1);
    half = 1 << (shift - 1);
  }
  // Carry out of the mantissa correctly bumps the exponent (and reaches inf at the top).
  if (rem > half || (rem === half && r & 1)) r++;
  return sign | r;
}

/** bfloat16 bits -> number (exact: bf16 is the top half of an f32). */
export function bf16ToF32(bits: number): number {
  scratchU32[0] = (bits & 0xffff) << 16;
  return scratchF32[0];
}

