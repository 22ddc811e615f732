// out[r, :] = table[ids[r] - firstRow, :] for the rows whose id falls in this
// table chunk [firstRow, firstRow + chunkRows): embeddings too large for one
// binding are gathered one chunk per dispatch into the same output.
struct Params { rows: u32, D: u32, firstRow: u32, chunkRows: u32, groupsX: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<i32>;
@group(0) @binding(2) var<storage, read> table: array<TTable>;
@group(0) @binding(3) var<storage, read_write> out: array<TOut>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wg.x + wg.y * p.groupsX) * 256u + lid;
  if (i >= p.rows * p.D) { return; }
  let r = i / p.D;
  let local = ids[r] - i32(p.firstRow);
  if (local < 0 || local >= i32(p.chunkRows)) { return; }
  out[i] = TOut(f32(table[u32(local) * p.D + i % p.D]));
}
