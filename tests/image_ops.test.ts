// The kernels `dr restore` uses around the model — reflect padding, StableSR's wavelet
// and AdaIN colour fixes — against plain TypeScript references on odd shapes, batch > 1.
import { beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../src/engine/engine.js';
import { adainColorFix, reflectPad, waveletBlur, waveletColorFix } from '../src/engine/ops/eval/image.js';
import { expectClose, rand } from './helpers.js';

let e: Engine;
beforeAll(async () => {
  e = await Engine.create();
});

type Shape = [number, number, number, number];
const at = (x: Float32Array, [, C, H, W]: Shape, b: number, c: number, y: number, xx: number) => x[((b * C + c) * H + y) * W + xx];

function reflectPadRef(x: Float32Array, s: Shape, top: number, bottom: number, left: number, right: number): Float32Array {
  const [B, C, H, W] = s;
  const [OH, OW] = [H + top + bottom, W + left + right];
  const reflect = (i: number, n: number) => (i < 0 ? -i : i >= n ? 2 * (n - 1) - i : i);
  const out = new Float32Array(B * C * OH * OW);
  let k = 0;
  for (let b = 0; b < B; b++) for (let c = 0; c < C; c++) for (let y = 0; y < OH; y++) for (let xx = 0; xx < OW; xx++) {
    out[k++] = at(x, s, b, c, reflect(y - top, H), reflect(xx - left, W));
  }
  return out;
}

/** F.pad(replicate, r) then the 3×3 binomial kernel at dilation r. */
function waveletBlurRef(x: Float32Array, s: Shape, r: number): Float32Array {
  const [B, C, H, W] = s;
  const out = new Float32Array(x.length);
  const clamp = (v: number, n: number) => Math.min(Math.max(v, 0), n - 1);
  const k = [1, 2, 1];
  let i = 0;
  for (let b = 0; b < B; b++) for (let c = 0; c < C; c++) for (let y = 0; y < H; y++) for (let xx = 0; xx < W; xx++) {
    let sum = 0;
    for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) {
      sum += k[dy + 1] * k[dx + 1] * at(x, s, b, c, clamp(y + dy * r, H), clamp(xx + dx * r, W));
    }
    out[i++] = sum / 16;
  }
  return out;
}

/** StableSR's adaptive_instance_normalization, per image and channel (unbiased variance + 1e-5). */
function adainRef(x: Float32Array, sx: Shape, ref: Float32Array, sr: Shape): Float32Array {
  const stats = (v: Float32Array, n: number, off: number) => {
    let m = 0;
    for (let i = 0; i < n; i++) m += v[off + i];
    m /= n;
    let q = 0;
    for (let i = 0; i < n; i++) q += (v[off + i] - m) ** 2;
    return { m, s: Math.sqrt(q / (n - 1) + 1e-5) };
  };
  const [B, C] = sx;
  const n = sx[2] * sx[3];
  const nr = sr[2] * sr[3];
  const out = new Float32Array(x.length);
  for (let p = 0; p < B * C; p++) {
    const a = stats(x, n, p * n);
    const r = stats(ref, nr, p * nr);
    for (let i = 0; i < n; i++) out[p * n + i] = ((x[p * n + i] - a.m) / a.s) * r.s + r.m;
  }
  return out;
}

const size = (s: Shape) => s.reduce((a, b) => a * b, 1);

describe('reflectPad', () => {
  it.each([
    { s: [1, 3, 5, 7] as Shape, pad: [0, 4, 0, 6] },
    { s: [2, 3, 9, 4] as Shape, pad: [2, 3, 1, 3] },
    { s: [1, 1, 1, 65] as Shape, pad: [0, 0, 64, 0] },
  ])('$s padded by $pad (top, bottom, left, right) as PyTorch reflect', async ({ s, pad }) => {
    const x = rand(size(s), 2);
    const y = reflectPad(e, e.upload(x, s), pad[0], pad[1], pad[2], pad[3]);
    expect(y.shape).toEqual([s[0], s[1], s[2] + pad[0] + pad[1], s[3] + pad[2] + pad[3]]);
    expect(await e.read(y)).toEqual(reflectPadRef(x, s, pad[0], pad[1], pad[2], pad[3])); // a pure copy: exact
  });

  it('refuses padding as large as the image (PyTorch does too)', () => {
    expect(() => reflectPad(e, e.upload(rand(3 * 4 * 4), [1, 3, 4, 4]), 0, 4, 0, 0)).toThrow(/less than the size/);
  });
});

describe('wavelet colour fix', () => {
  it.each([1, 2, 4, 16])('blur at dilation %i (taps past the edge clamp), batch 2, 5×7', async (r) => {
    const s: Shape = [2, 3, 5, 7];
    const x = rand(size(s), r);
    // 9 products summed in f32: a few ulps of the inputs' magnitude (≤ 1).
    expectClose(await e.read(waveletBlur(e, e.upload(x, s), r)), waveletBlurRef(x, s, r), 0, 1e-6);
  });

  it('keeps the restored high frequencies and takes the reference\'s low ones', async () => {
    const s: Shape = [1, 3, 13, 11];
    const restored = rand(size(s), 5);
    const reference = rand(size(s), 6);
    // StableSR: high(restored) + low(reference), low = five blurs at dilations 1..16.
    const low = (x: Float32Array) => [1, 2, 4, 8, 16].reduce((v, r) => waveletBlurRef(v, s, r), x);
    const lr = low(restored);
    const lref = low(reference);
    const expected = restored.map((v, i) => v - lr[i] + lref[i]);
    const fixed = waveletColorFix(e, e.upload(restored, s), e.upload(reference, s));
    expectClose(await e.read(fixed), expected, 0, 1e-5); // 5 chained blurs + 3 adds, values ≤ 2
  });

  it('leaves an image alone when the reference is the image itself', async () => {
    const s: Shape = [1, 3, 6, 9];
    const x = rand(size(s), 7);
    expect(await e.read(waveletColorFix(e, e.upload(x, s), e.upload(x, s)))).toEqual(x);
  });
});

describe('AdaIN colour fix', () => {
  it.each([
    { s: [1, 3, 7, 5] as Shape, r: [1, 3, 7, 5] as Shape },
    { s: [2, 3, 9, 11] as Shape, r: [2, 3, 4, 3] as Shape },
  ])('restored $s takes the channel statistics of reference $r', async ({ s, r }) => {
    const x = rand(size(s), 8, 2);
    const ref = rand(size(r), 9, 0.5).map((v) => v + 0.3);
    const out = adainColorFix(e, e.upload(x, s), e.upload(ref, r));
    expect(out.shape).toEqual(s);
    // Means and norms over ≤ 99 values in f32: relative error ~1e-6, outputs ≤ ~2.
    expectClose(await e.read(out), adainRef(x, s, ref, r), 1e-4, 1e-5);
  });
});
