// Partial sums of (a - b)² over 256-element workgroups: out[g] = Σ over workgroup g. PSNR
// adds the partials on the host in f64, the MSE loss with sumTo.
//!include reduce.wgsl
struct Params { n: u32, groupsX: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<TA>;
@group(0) @binding(2) var<storage, read> b: array<TB>;
@group(0) @binding(3) var<storage, read_write> out: array<TOut>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let g = wg.x + wg.y * p.groupsX;
  let i = g * 256u + lid;
  var v = 0.0;
  if (i < p.n) {
    let d = f32(a[i]) - f32(b[i]);
    v = d * d;
  }
  let s = wg_sum(v, lid);
  if (lid == 0u && g * 256u < p.n) { out[g] = TOut(s); }
}
