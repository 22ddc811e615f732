// LPIPS per-pixel distance of one layer: features a, b [C, P] (P = H·W), lin weights [C]:
//   out[p] = Σ_c w_c (a_cp / (‖a_·p‖ + 1e-10) − b_cp / (‖b_·p‖ + 1e-10))²
// (channel-unit normalisation, squared difference, 1×1 lin conv without bias).
struct Params { C: u32, P: u32, groupsX: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<TA>;
@group(0) @binding(2) var<storage, read> b: array<TB>;
@group(0) @binding(3) var<storage, read> w: array<TW>;
@group(0) @binding(4) var<storage, read_write> out: array<TOut>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wg.x + wg.y * p.groupsX) * 256u + lid;
  if (i >= p.P) { return; }
  var na = 0.0;
  var nb = 0.0;
  for (var c = 0u; c < p.C; c++) {
    let va = f32(a[c * p.P + i]);
    let vb = f32(b[c * p.P + i]);
    na += va * va;
    nb += vb * vb;
  }
  let da = sqrt(na) + 1e-10;
  let db = sqrt(nb) + 1e-10;
  var s = 0.0;
  for (var c = 0u; c < p.C; c++) {
    let d = f32(a[c * p.P + i]) / da - f32(b[c * p.P + i]) / db;
    s += f32(w[c]) * d * d;
  }
  out[i] = TOut(s);
}
