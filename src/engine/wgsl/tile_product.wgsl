// The register-tiled product shared by matmul and the implicit-GEMM conv2d: a 64×64
// output tile per 8×8 workgroup, 8×8 outputs per thread, K in steps of TILE_K through
// shared memory. The kernel fills As ([k][row/4]) and Bs ([k][column/4]) each step.
const TILE_MN = 64u;
const TILE_K = 16u;
var<workgroup> As: array<vec4<f32>, 256>;
var<workgroup> Bs: array<vec4<f32>, 256>;

// acc[2i + j] += rows (ty + 8i)·4 + 0..3 (the vector's x..w is the row) × columns (tx + 8j)·4 + 0..3, over TILE_K.
fn accumulate_tiles(acc: ptr<function, array<vec4<f32>, 16>>, ty: u32, tx: u32) {
  for (var kk = 0u; kk < TILE_K; kk++) {
    let a0 = As[kk * 16u + ty];
    let a1 = As[kk * 16u + ty + 8u];
    let b0 = Bs[kk * 16u + tx];
    let b1 = Bs[kk * 16u + tx + 8u];
    (*acc)[0] += a0.x * b0; (*acc)[1] += a0.x * b1;
    (*acc)[2] += a0.y * b0; (*acc)[3] += a0.y * b1;
    (*acc)[4] += a0.z * b0; (*acc)[5] += a0.z * b1;
    (*acc)[6] += a0.w * b0; (*acc)[7] += a0.w * b1;
    (*acc)[8] += a1.x * b0; (*acc)[9] += a1.x * b1;
    (*acc)[10] += a1.y * b0; (*acc)[11] += a1.y * b1;
    (*acc)[12] += a1.z * b0; (*acc)[13] += a1.z * b1;
    (*acc)[14] += a1.w * b0; (*acc)[15] += a1.w * b1;
  }
}
