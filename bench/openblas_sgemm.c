// OpenBLAS's cblas_sgemm at one shape, the CPU reference for bench/ab_kernels.ts (`openblas`):
// C[M, N] = A[M, K] · B, with B = W[N, K]ᵀ as for a Linear layer (`t`) or B[K, N] (`n`).
// Built on demand by the bench (gcc -O2 openblas_sgemm.c -lopenblas); threads come from
// OPENBLAS_NUM_THREADS. Prints one JSON line: the best repetition's GFLOP/s by the wall clock and
// CPU-normalised GFLOP/s (FLOP ÷ (process CPU seconds ÷ cores)) over all timed calls.
//
//   ./openblas_sgemm M K N t|n MIN_SECONDS REPS CORES
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static double cpu_seconds(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}

// Values in [-scale, scale) from a fixed LCG: the numbers do not matter, finite non-denormal ones do.
static float *filled(size_t n, unsigned seed, float scale) {
  float *p = malloc(n * sizeof *p);
  if (!p) {
    fprintf(stderr, "openblas_sgemm: out of memory\n");
    exit(1);
  }
  for (size_t i = 0; i < n; i++) {
    seed = seed * 1664525u + 1013904223u;
    p[i] = ((seed >> 8) / 16777216.0f * 2 - 1) * scale;
  }
  return p;
}

int main(int argc, char **argv) {
  if (argc != 8 || (strcmp(argv[4], "t") && strcmp(argv[4], "n"))) {
    fprintf(stderr, "usage: %s M K N t|n MIN_SECONDS REPS CORES\n", argv[0]);
    return 2;
  }
  const int M = atoi(argv[1]), K = atoi(argv[2]), N = atoi(argv[3]);
  const int transB = !strcmp(argv[4], "t");
  const double minSeconds = atof(argv[5]);
  const int reps = atoi(argv[6]);
  const double cores = atof(argv[7]);
  if (M < 1 || K < 1 || N < 1 || reps < 1 || cores <= 0) {
    fprintf(stderr, "openblas_sgemm: bad arguments\n");
    return 2;
  }
  float *A = filled((size_t)M * K, 1, 1.0f), *B = filled((size_t)K * N, 2, 0.05f), *C = filled((size_t)M * N, 3, 0.0f);
  const double flops = 2.0 * M * N * K;
#define SGEMM() cblas_sgemm(CblasRowMajor, CblasNoTrans, transB ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, A, K, B, transB ? K : N, 0.0f, C, N)
  SGEMM(); // warm-up: thread pool start and first touch of C
  double best = 1e30, cpu = 0;
  long calls = 0;
  for (int r = 0; r < reps; r++) {
    const double c0 = cpu_seconds(), t0 = now();
    long n = 0;
    double t;
    do {
      SGEMM();
      n++;
      t = now() - t0;
    } while (t < minSeconds);
    cpu += cpu_seconds() - c0;
    calls += n;
    if (t / n < best) best = t / n;
  }
  printf("{\"gflops\": %.3f, \"cpuNormGflops\": %.3f, \"ms\": %.3f, \"calls\": %ld, \"check\": %.6g}\n",
         flops / best / 1e9, flops * calls / (cpu / cores) / 1e9, best * 1e3, calls, (double)C[(size_t)M * N / 2]);
  free(A);
  free(B);
  free(C);
  return 0;
}
