// The inner step of the CPU-adapter kernels' lane-per-row tile (matmul_tex.wgsl's shape, generic
// over its size; ../shared/design/lavapipe-kernels.md): lane l of an 8-lane subgroup owns R rows,
// the subgroup 8J columns. acc[r][c] holds columns 4c .. 4c + 3 of row r; a[r] is row r's texel
// (4 consecutive k) and x[j] the texel of column 8j + l, whose values reach every lane by
// subgroupBroadcast (one register permute on llvmpipe). The four k of a texel are written out:
// a kk loop stays a masked loop on llvmpipe (0.8–0.9×). Needs the consts R and J.
const C = 2u * J;

fn tile_k(acc: ptr<function, array<array<vec4<f32>, C>, R>>, a: ptr<function, array<vec4<f32>, R>>,
    x: ptr<function, array<vec4<f32>, J>>, kk: u32) {
  for (var j = 0u; j < J; j++) {
    let w = (*x)[j][kk];
    let lo = vec4(subgroupBroadcast(w, 0u), subgroupBroadcast(w, 1u), subgroupBroadcast(w, 2u), subgroupBroadcast(w, 3u));
    let hi = vec4(subgroupBroadcast(w, 4u), subgroupBroadcast(w, 5u), subgroupBroadcast(w, 6u), subgroupBroadcast(w, 7u));
    for (var r = 0u; r < R; r++) {
      let ar = (*a)[r][kk];
      (*acc)[r][2u * j] += ar * lo;
      (*acc)[r][2u * j + 1u] += ar * hi;
    }
  }
}

fn tile_texel(acc: ptr<function, array<array<vec4<f32>, C>, R>>, a: ptr<function, array<vec4<f32>, R>>,
    x: ptr<function, array<vec4<f32>, J>>) {
  tile_k(acc, a, x, 0u);
  tile_k(acc, a, x, 1u);
  tile_k(acc, a, x, 2u);
  tile_k(acc, a, x, 3u);
}
