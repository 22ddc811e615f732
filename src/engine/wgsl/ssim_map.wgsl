// SSIM map with 'valid' filtering (pyiqa / MATLAB ssim): for planes x, y [P, H, W] and a
// K×K window w (row-major), out[P, H-K+1, W-K+1] = l · relu(cs) with
//   l  = (2 μx μy + C1) / (μx² + μy² + C1),  cs = (2 σxy + C2) / (σx² + σy² + C2).
// One thread per output pixel. Moments are accumulated on values centred at the window's
// middle pixel (variance is shift-invariant), which keeps f32 cancellation in σ² small
// even for 0..255 data.
struct Params { H: u32, W: u32, Ho: u32, Wo: u32, planes: u32, c1: f32, c2: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<TX>;
@group(0) @binding(2) var<storage, read> y: array<TY>;
@group(0) @binding(3) var<storage, read> w: array<TW>;
@group(0) @binding(4) var<storage, read_write> out: array<TOut>;

@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let ox = gid.x;
  let oy = gid.y;
  let plane = gid.z;
  if (ox >= p.Wo || oy >= p.Ho || plane >= p.planes) { return; }
  let base = plane * p.H * p.W;
  let centre = base + (oy + K / 2u) * p.W + ox + K / 2u;
  let xc = f32(x[centre]);
  let yc = f32(y[centre]);
  var mx = 0.0; var my = 0.0; var sxx = 0.0; var syy = 0.0; var sxy = 0.0;
  for (var j = 0u; j < K; j++) {
    let row = base + (oy + j) * p.W + ox;
    for (var i = 0u; i < K; i++) {
      let wt = f32(w[j * K + i]);
      let dx = f32(x[row + i]) - xc;
      let dy = f32(y[row + i]) - yc;
      mx += wt * dx;
      my += wt * dy;
      sxx += wt * dx * dx;
      syy += wt * dy * dy;
      sxy += wt * dx * dy;
    }
  }
  let vx = sxx - mx * mx;
  let vy = syy - my * my;
  let cov = sxy - mx * my;
  let mux = xc + mx;
  let muy = yc + my;
  let l = (2.0 * mux * muy + p.c1) / (mux * mux + muy * muy + p.c1);
  let cs = (2.0 * cov + p.c2) / (vx + vy + p.c2);
  out[plane * p.Ho * p.Wo + oy * p.Wo + ox] = TOut(l * max(cs, 0.0));
}
