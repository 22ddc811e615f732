// Backward of pool2d.wgsl: one thread per input element gathers dy over the windows that
// contain it (no atomics). MODE 0 (avg): dy / (in-bounds count of that window). MODE 1
// (max): dy when this element is the window's first maximum in row-major order (PyTorch's
// rule for ties; padding never wins).
struct Params { H: u32, W: u32, Ho: u32, Wo: u32, planes: u32, K: u32, S: u32, pad: u32, groupsX: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<TX>;
@group(0) @binding(2) var<storage, read> dy: array<TDy>;
@group(0) @binding(3) var<storage, read_write> dx: array<TDx>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wg.x + wg.y * p.groupsX) * 256u + lid;
  if (i >= p.planes * p.H * p.W) { return; }
  let ix = i32(i % p.W);
  let iy = i32((i / p.W) % p.H);
  let plane = i / (p.W * p.H);
  let base = plane * p.H * p.W;
  let K = i32(p.K);
  let S = i32(p.S);
  let P = i32(p.pad);
  // Windows oy with oy·S − P ≤ iy ≤ oy·S − P + K − 1, i.e. ceil((iy + P − K + 1) / S) ≤ oy ≤ (iy + P) / S.
  let ny = iy + P - K + 1;
  let nx = ix + P - K + 1;
  let oy0 = select(0, (ny + S - 1) / S, ny > 0);
  let oy1 = min((iy + P) / S, i32(p.Ho) - 1);
  let ox0 = select(0, (nx + S - 1) / S, nx > 0);
  let ox1 = min((ix + P) / S, i32(p.Wo) - 1);
  var g = 0.0;
  for (var oy = oy0; oy <= oy1; oy++) {
    let y0 = max(oy * S - P, 0);
    let y1 = min(oy * S - P + K, i32(p.H));
    for (var ox = ox0; ox <= ox1; ox++) {
      let x0 = max(ox * S - P, 0);
      let x1 = min(ox * S - P + K, i32(p.W));
      let d = f32(dy[(plane * p.Ho + u32(oy)) * p.Wo + u32(ox)]);
      if (MODE == 0u) {
        g += d / f32((y1 - y0) * (x1 - x0));
      } else {
        var m = 0.0;
        var arg = -1;
        for (var a = y0; a < y1; a++) {
          for (var b = x0; b < x1; b++) {
            let v = f32(x[base + u32(a) * p.W + u32(b)]);
            if (arg < 0 || v > m) { m = v; arg = a * i32(p.W) + b; }
          }
        }
        if (arg == iy * i32(p.W) + ix) { g += d; }
      }
    }
  }
  dx[i] = TDx(g);
}
