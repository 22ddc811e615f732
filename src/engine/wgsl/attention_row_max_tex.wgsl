// Each score row's maximum for attention_values_tex's exp(s − max) (CPU-adapter path,
// ops/attention_tex.ts): one invocation per row of attention_scores_tex's texture, textures only
// in the loop. Dispatch (ceil(rows / 64)).
struct Params { rows: u32, K4: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> rowMax: array<f32>;
@group(0) @binding(2) var s: texture_2d<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let row = min(gid.x, p.rows - 1u);
  var m = vec4(-3.4e38);
  for (var t = 0u; t < p.K4; t++) { m = max(m, textureLoad(s, vec2u(t, row), 0)); }
  if (gid.x < p.rows) { rowMax[row] = max(max(m.x, m.y), max(m.z, m.w)); }
}
