// Latent from a VAE posterior: moments [B, 2C, S] = [mean | logvar] →
// z [B, C, S] = (mean + exp(½·clamp(logvar, -30, 20)) · noise) · scale, the noise
// term only with HAS_NOISE (else the posterior mode).
struct Params { C: u32, S: u32, n: u32, scale: f32, groupsX: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> moments: array<TMoments>;
@group(0) @binding(2) var<storage, read> noise: array<TNoise>;
@group(0) @binding(3) var<storage, read_write> z: array<TZ>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wg.x + wg.y * p.groupsX) * 256u + lid;
  if (i >= p.n) { return; }
  let b = i / (p.C * p.S);
  let r = i % (p.C * p.S);
  let mean = f32(moments[b * 2u * p.C * p.S + r]);
  var v = mean;
  if (HAS_NOISE) {
    let logvar = clamp(f32(moments[b * 2u * p.C * p.S + p.C * p.S + r]), -30.0, 20.0);
    v = mean + exp(0.5 * logvar) * f32(noise[i]);
  }
  z[i] = TZ(v * p.scale);
}
