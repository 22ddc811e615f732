/**
 * Fréchet distance between two Gaussians fitted to feature sets (FID), in f64 on the host:
 *   ‖μ1 − μ2‖² + tr S1 + tr S2 − 2 tr √(√S1 S2 √S1),
 * S the unbiased covariance (np.cov, N − 1) of the float32 features.
 *
 * The trace of the matrix square root is Σ √λ over the eigenvalues λ ≥ 0 of a symmetric PSD
 * matrix similar to √S1 S2 √S1 (no non-symmetric sqrtm as in scipy), taken from whichever is
 * smaller:
 *  - samples: with A = (X1 − μ1)/√(N1−1) and B likewise, S1 = AᵀA, S2 = BᵀB and the nonzero
 *    eigenvalues of √S1 S2 √S1 are those of (ABᵀ)(ABᵀ)ᵀ, an N1×N1 (or N2×N2) Gram matrix —
 *    exact for rank-deficient covariances (fewer images than dimensions, the usual case); its
 *    singular values come from one-sided Jacobi, so the structural zeros stay at ε·σmax;
 *  - dimensions: S1 = LLᵀ (Cholesky, checked positive definite) and LᵀS2L (d×d) has the same
 *    eigenvalues (Householder tridiagonalisation and implicit QL). Taken when both sets are
 *    larger than d and the Gram form would cost more; if neither covariance is positive
 *    definite the Gram form is used.
 */
import { DrError } from '../../errors.js';

export interface FeatureSet {
  /** Row-major [n, d] features. */
  data: Float32Array;
  n: number;
  d: number;
}

export interface FrechetResult {
  fid: number;
  meanTerm: number;
  traceSqrt: number;
  method: 'gram' | 'cholesky';
}

/** Centred rows scaled by 1/√(n−1), in f64, and the mean. */
function centred(x: FeatureSet): { a: Float64Array; mu: Float64Array } {
  const { data, n, d } = x;
  const mu = new Float64Array(d);
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) mu[j] += data[i * d + j];
  for (let j = 0; j < d; j++) mu[j] /= n;
  const a = new Float64Array(n * d);
  const s = 1 / Math.sqrt(n - 1);
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) a[i * d + j] = (data[i * d + j] - mu[j]) * s;
  return { a, mu };
}

/** AᵀA for row-major A [n, d]: the covariance when A is centred and scaled. */
function gramT(a: Float64Array, n: number, d: number): Float64Array {
  const s = new Float64Array(d * d);
  for (let k = 0; k < n; k++) {
    const row = k * d;
    for (let i = 0; i < d; i++) {
      const v = a[row + i];
      if (v === 0) continue;
      const out = i * d;
      for (let j = i; j < d; j++) s[out + j] += v * a[row + j];
    }
  }
  for (let i = 0; i < d; i++) for (let j = 0; j < i; j++) s[i * d + j] = s[j * d + i];
  return s;
}

/** Lower Cholesky factor of a symmetric matrix, or undefined if it is not safely positive definite. */
export function cholesky(s: Float64Array, d: number): Float64Array | undefined {
  let maxDiag = 0;
  for (let i = 0; i < d; i++) maxDiag = Math.max(maxDiag, s[i * d + i]);
  const tol = d * 2.220446049250313e-16 * maxDiag;
  const l = new Float64Array(d * d);
  for (let j = 0; j < d; j++) {
    let v = s[j * d + j];
    for (let k = 0; k < j; k++) v -= l[j * d + k] ** 2;
    if (!(v > tol)) return undefined;
    const ljj = Math.sqrt(v);
    l[j * d + j] = ljj;
    for (let i = j + 1; i < d; i++) {
      let w = s[i * d + j];
      for (let k = 0; k < j; k++) w -= l[i * d + k] * l[j * d + k];
      l[i * d + j] = w / ljj;
    }
  }
  return l;
}

/** Eigenvalues of a symmetric n×n matrix (row-major; destroyed), ascending. */
export function symmetricEigenvalues(a: Float64Array, n: number): Float64Array {
  const diag = new Float64Array(n);
  const off = new Float64Array(n); // off[i]: element (i+1, i) of the tridiagonal form
  const v = new Float64Array(n);
  const p = new Float64Array(n);
  for (let k = 0; k < n - 2; k++) {
    // Householder reflection zeroing column k below the subdiagonal of the trailing block.
    let norm = 0;
    for (let i = k + 1; i < n; i++) norm += a[i * n + k] ** 2;
    norm = Math.sqrt(norm);
    diag[k] = a[k * n + k];
    const x0 = a[(k + 1) * n + k];
    if (norm === 0) {
      off[k] = 0;
      continue;
    }
    const alpha = x0 > 0 ? -norm : norm;
    off[k] = alpha;
    let vv = 0;
    for (let i = k + 1; i < n; i++) {
      v[i] = a[i * n + k] - (i === k + 1 ? alpha : 0);
      vv += v[i] * v[i];
    }
    if (vv === 0) continue;
    const beta = 2 / vv;
    // p = β A22 v, K = β/2 vᵀp, w = p − K v; A22 −= v wᵀ + w vᵀ
    let vp = 0;
    for (let i = k + 1; i < n; i++) {
      let s = 0;
      const row = i * n;
      for (let j = k + 1; j < n; j++) s += a[row + j] * v[j];
      p[i] = beta * s;
      vp += v[i] * p[i];
    }
    const K = (beta / 2) * vp;
    for (let i = k + 1; i < n; i++) p[i] -= K * v[i];
    for (let i = k + 1; i < n; i++) {
      const row = i * n;
      const vi = v[i];
      const wi = p[i];
      for (let j = k + 1; j < n; j++) a[row + j] -= vi * p[j] + wi * v[j];
    }
  }
  if (n >= 2) {
    diag[n - 2] = a[(n - 2) * n + n - 2];
    off[n - 2] = a[(n - 1) * n + n - 2];
  }
  if (n >= 1) diag[n - 1] = a[n * n - 1];
  off[n - 1] = 0;
  tridiagonalQl(diag, off);
  return diag.sort();
}

/**
 * Implicit QL with Wilkinson shifts on a symmetric tridiagonal matrix: eigenvalues in d.
 * An off-diagonal element deflates below ε·‖T‖ (as EISPACK's tql2): absolute accuracy
 * ε·‖T‖, and clusters of zero eigenvalues (rank-deficient Gram matrices) converge.
 */
function tridiagonalQl(d: Float64Array, e: Float64Array): void {
  const n = d.length;
  let norm = 0;
  for (let i = 0; i < n; i++) norm = Math.max(norm, Math.abs(d[i]) + Math.abs(e[i]));
  const tiny = 2.220446049250313e-16 * norm;
  for (let l = 0; l < n; l++) {
    let iter = 0;
    for (;;) {
      let m = l;
      for (; m < n - 1; m++) if (Math.abs(e[m]) <= tiny) break;
      if (m === l) break;
      if (++iter > 60) throw new DrError('FID: the eigenvalue iteration did not converge (non-finite features?)');
      let g = (d[l + 1] - d[l]) / (2 * e[l]);
      let r = Math.hypot(g, 1);
      g = d[m] - d[l] + e[l] / (g + (g >= 0 ? r : -r));
      let s = 1;
      let c = 1;
      let p = 0;
      let i = m - 1;
      let deflated = false;
      for (; i >= l; i--) {
        const f = s * e[i];
        const b = c * e[i];
        r = Math.hypot(f, g);
        e[i + 1] = r;
        if (r === 0) {
          d[i + 1] -= p;
          e[m] = 0;
          deflated = true;
          break;
        }
        s = f / r;
        c = g / r;
        g = d[i + 1] - p;
        r = (d[i] - g) * s + 2 * c * b;
        p = s * r;
        d[i + 1] = g + p;
        g = c * r - b;
      }
      if (deflated) continue;
      d[l] -= p;
      e[l] = g;
      e[m] = 0;
    }
  }
}

const sumSqrt = (eig: Float64Array): number => eig.reduce((t, v) => t + Math.sqrt(Math.max(v, 0)), 0);

/**
 * Singular values of the n vectors u (row-major [n, m]) taken as matrix columns: one-sided
 * (Hestenes) Jacobi, accurate to ε·σmax also for the tiny and zero ones — unlike √eig(CᵀC),
 * which loses them to √(ε)·σmax.
 */
export function singularValues(u: Float64Array, n: number, m: number): Float64Array {
  for (let sweep = 0; sweep < 60; sweep++) {
    let rotated = false;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        let [alpha, beta, gamma] = [0, 0, 0];
        for (let k = 0; k < m; k++) {
          const [x, y] = [u[p * m + k], u[q * m + k]];
          alpha += x * x;
          beta += y * y;
          gamma += x * y;
        }
        if (gamma === 0 || Math.abs(gamma) <= 2.220446049250313e-16 * Math.sqrt(alpha * beta)) continue;
        rotated = true;
        const zeta = (beta - alpha) / (2 * gamma);
        const t = (zeta >= 0 ? 1 : -1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t);
        const s = c * t;
        for (let k = 0; k < m; k++) {
          const [x, y] = [u[p * m + k], u[q * m + k]];
          u[p * m + k] = c * x - s * y;
          u[q * m + k] = s * x + c * y;
        }
      }
    }
    if (!rotated) break;
  }
  return Float64Array.from({ length: n }, (_, i) => {
    let s = 0;
    for (let k = 0; k < m; k++) s += u[i * m + k] ** 2;
    return Math.sqrt(s);
  });
}

/** tr √(√S1 S2 √S1) by the Gram form: the nuclear norm of A Bᵀ. */
function traceSqrtGram(a: Float64Array, n1: number, b: Float64Array, n2: number, d: number): number {
  const [x, nx, y, ny] = n1 <= n2 ? [a, n1, b, n2] : [b, n2, a, n1];
  const c = new Float64Array(nx * ny); // row i: x_i · y_j over j — the nx columns of (Y Xᵀ), each of length ny
  for (let i = 0; i < nx; i++) {
    for (let j = 0; j < ny; j++) {
      let s = 0;
      for (let k = 0; k < d; k++) s += x[i * d + k] * y[j * d + k];
      c[i * ny + j] = s;
    }
  }
  return singularValues(c, nx, ny).reduce((t, v) => t + v, 0);
}

/** tr √(Lᵀ S L) with L lower triangular (d×d). */
function traceSqrtCholesky(l: Float64Array, s: Float64Array, d: number): number {
  const t = new Float64Array(d * d); // S L
  for (let i = 0; i < d; i++) {
    for (let k = 0; k < d; k++) {
      const v = s[i * d + k];
      if (v === 0) continue;
      const row = k * d;
      for (let j = 0; j <= k; j++) t[i * d + j] += v * l[row + j];
    }
  }
  const m = new Float64Array(d * d); // Lᵀ (S L)
  for (let k = 0; k < d; k++) {
    for (let i = 0; i <= k; i++) {
      const v = l[k * d + i];
      if (v === 0) continue;
      for (let j = 0; j < d; j++) m[i * d + j] += v * t[k * d + j];
    }
  }
  for (let i = 0; i < d; i++) for (let j = 0; j < i; j++) m[i * d + j] = m[j * d + i] = (m[i * d + j] + m[j * d + i]) / 2;
  return sumSqrt(symmetricEigenvalues(m, d));
}

/** FID between two feature sets; `method` forces one form (tests), otherwise the cheaper one is taken. */
export function frechetDistance(x1: FeatureSet, x2: FeatureSet, method?: 'gram' | 'cholesky'): FrechetResult {
  if (x1.d !== x2.d) throw new DrError(`FID: feature sizes differ (${x1.d} and ${x2.d})`);
  if (x1.n < 2 || x2.n < 2) throw new DrError(`FID: needs at least 2 images per set (got ${x1.n} and ${x2.n})`);
  const d = x1.d;
  const { a, mu: mu1 } = centred(x1);
  const { a: b, mu: mu2 } = centred(x2);
  let meanTerm = 0;
  for (let j = 0; j < d; j++) meanTerm += (mu1[j] - mu2[j]) ** 2;
  let tr1 = 0;
  for (const v of a) tr1 += v * v;
  let tr2 = 0;
  for (const v of b) tr2 += v * v;
  let traceSqrt: number | undefined;
  let used: 'gram' | 'cholesky' = 'gram';
  if (method === 'cholesky' || (method === undefined && Math.min(x1.n, x2.n) > d && x1.n * x2.n > 2 * d * d)) {
    const s1 = gramT(a, x1.n, d);
    const s2 = gramT(b, x2.n, d);
    const l1 = cholesky(s1, d);
    const l2 = l1 ? undefined : cholesky(s2, d);
    if (l1 || l2) {
      traceSqrt = l1 ? traceSqrtCholesky(l1, s2, d) : traceSqrtCholesky(l2!, s1, d);
      used = 'cholesky';
    } else if (method === 'cholesky') {
      throw new DrError('FID: neither covariance is positive definite (fewer images than feature dimensions)');
    }
  }
  traceSqrt ??= traceSqrtGram(a, x1.n, b, x2.n, d);
  return { fid: meanTerm + tr1 + tr2 - 2 * traceSqrt, meanTerm, traceSqrt, method: used };
}
