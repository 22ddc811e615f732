// Partial sums of x² for a global gradient norm: workgroup g of `groups` strides over x and
// writes partial[at + g]; one dispatch per tensor fills its own slots, clip_coef sums them.
//!include reduce.wgsl
struct Params { n: u32, groups: u32, at: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<TX>;
@group(0) @binding(2) var<storage, read_write> partial: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  var s = 0.0;
  for (var i = wg.x * WG + lid; i < p.n; i += p.groups * WG) {
    let v = f32(x[i]);
    s += v * v;
  }
  let total = wg_sum(s, lid);
  if (lid == 0u) { partial[p.at + wg.x] = total; }
}
