// out = Σ_{i<N} c_i · x_i over same-shape tensors, accumulated in f32 (the
// scheduler's latent updates). terms (1..4) is a uniform branch, so unused slots, bound to x0
// by the host, are never read: a coefficient of 0 would still turn inf into NaN.
struct Params { n: u32, groupsX: u32, c0: f32, c1: f32, c2: f32, c3: f32, terms: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x0: array<TX0>;
@group(0) @binding(2) var<storage, read> x1: array<TX1>;
@group(0) @binding(3) var<storage, read> x2: array<TX2>;
@group(0) @binding(4) var<storage, read> x3: array<TX3>;
@group(0) @binding(5) var<storage, read_write> out: array<TOut>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wg.x + wg.y * p.groupsX) * 256u + lid;
  if (i >= p.n) { return; }
  var acc = p.c0 * f32(x0[i]);
  if (p.terms > 1u) { acc += p.c1 * f32(x1[i]); }
  if (p.terms > 2u) { acc += p.c2 * f32(x2[i]); }
  if (p.terms > 3u) { acc += p.c3 * f32(x3[i]); }
  out[i] = TOut(acc);
}
