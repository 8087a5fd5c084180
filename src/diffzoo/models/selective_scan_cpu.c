/* Fused selective scan for CPUs: the whole recurrence of selective_scan_ref in one pass over time.
 *
 * Built on first use by scan_kernel.py with the system C compiler (no PyTorch headers; called through
 * ctypes, which releases the GIL, so batch slices run in parallel threads). Per batch row and time
 * step it keeps the (N, D) state in cache and never writes the (batch, D, L, N) tensors that a
 * tensor-level scan materialises: memory traffic is O(batch L (D + N)) instead of O(batch L D N).
 *
 * Layout: u, delta, z, out and their gradients are channel-last (batch, L, D) with unit stride in D
 * (any batch and time strides); B and C are (batch, L, N) with any strides; A is given transposed,
 * (N, D) contiguous. delta_t = softplus(delta_in_t + delta_bias) (each optional), then
 *   h_t = exp(delta_t A) * h_{t-1} + delta_t u_t B_t,  y_t = C_t . h_t + D u_t,  out_t = y_t silu(z_t)
 * `reverse` runs time from L-1 down to 0 (the backward direction of a bidirectional mixer, no flips).
 * The forward stores the state entering every chunk of CHUNK steps; the backward recomputes a chunk's
 * states from it, then runs the reverse recurrence g_t = C_t dy_t + exp(delta_{t+1} A) g_{t+1}.
 * Vectorised over D (inner loops with `omp simd`, exp by a Cephes polynomial, about 2 ulp).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MULTIVERSION
#endif

#define CHUNK 64  /* steps per stored state */

int scan_chunk(void) { return CHUNK; }

/* exp(x) to about 2 ulp: x = k ln2 + r, |r| <= ln2/2, Cephes' polynomial for exp(r), 2^k from the
 * exponent bits; k is rounded by the 1.5 * 2^23 trick, so no float-int conversion or libm call stops
 * the loops from vectorising (with -fno-trapping-math, the selects become blends). */
static inline float fast_exp(float x) {
    float xc = x < -87.0f ? -87.0f : x;
    xc = xc > 88.0f ? 88.0f : xc;
    union { float f; int32_t i; } m, scale;
    m.f = xc * 1.44269504088896341f + 12582912.0f;
    float k = m.f - 12582912.0f;
    float r = xc - k * 0.693359375f + k * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    scale.i = (m.i - 0x4B400000 + 127) << 23;
    float v = p * scale.f;
    return x < -87.0f ? 0.0f : v;
}

typedef struct {
    int64_t batch, length, dim, n;
    const float *u, *delta, *a_t, *b, *c, *d_skip, *z, *delta_bias;
    int64_t su_b, su_t, sd_b, sd_t, sz_b, sz_t, sb_b, sb_t, sb_n, sc_b, sc_t, sc_n;
    int reverse, softplus;
} scan_args;

/* softplus(x) = max(x, 0) + log1p(exp(-|x|)); log1p(e) for e in (0, 1] as 2 atanh(e / (2 + e)), an
 * odd series in s <= 1/3 (truncation below 1e-8), so the loop stays vectorised. */
static inline float softplus_f(float x) {
    float e = fast_exp(x < 0.0f ? x : -x);
    float s = e / (2.0f + e), s2 = s * s;
    float series = 1.0f + s2 * (1.0f / 3 + s2 * (1.0f / 5 + s2 * (1.0f / 7 + s2 * (1.0f / 9 + s2 * (1.0f / 11
                   + s2 * (1.0f / 13))))));
    return (x > 0.0f ? x : 0.0f) + 2.0f * s * series;
}

/* delta_t of batch row bi into dl (D): the bias added and softplus applied where asked. */
static inline __attribute__((always_inline)) void delta_row(const scan_args *p, int64_t bi, int64_t t, float *dl) {
    const float *raw = p->delta + bi * p->sd_b + t * p->sd_t, *bias = p->delta_bias;
    const int64_t D = p->dim;
#pragma omp simd
    for (int64_t d = 0; d < D; d++) {
        float x = raw[d] + (bias ? bias[d] : 0.0f);
        dl[d] = p->softplus ? softplus_f(x) : x;
    }
}

/* One time step t of batch row bi: h <- exp(delta A) h + delta u B, y = C . h (both (N, D) / (D)),
 * dl = delta, du = delta u; with `store` (a constant where inlined) also the decay and the new state. */
static inline __attribute__((always_inline)) void scan_step(const scan_args *p, int64_t bi, int64_t t, float *h,
                                                            float *dl, float *du, float *y, float *decay,
                                                            float *states, const int store) {
    const int64_t D = p->dim, N = p->n;
    const float *u = p->u + bi * p->su_b + t * p->su_t;
    delta_row(p, bi, t, dl);
#pragma omp simd
    for (int64_t d = 0; d < D; d++) { du[d] = dl[d] * u[d]; y[d] = 0.0f; }
    for (int64_t s = 0; s < N; s++) {
        const float bn = p->b[bi * p->sb_b + t * p->sb_t + s * p->sb_n];
        const float cn = p->c[bi * p->sc_b + t * p->sc_t + s * p->sc_n];
        const float *a = p->a_t + s * D;
        float *hs = h + s * D;
#pragma omp simd
        for (int64_t d = 0; d < D; d++) {
            float e = fast_exp(dl[d] * a[d]);
            float v = e * hs[d] + du[d] * bn;
            hs[d] = v;
            y[d] += v * cn;
            if (store) {
                decay[s * D + d] = e;
                states[s * D + d] = v;
            }
        }
    }
}

/* out: (batch, L, D) contiguous; chunk_states: (batch, n_chunks, N, D). Rows [b0, b1). */
MULTIVERSION
void scan_forward(const scan_args *p, float *out, float *chunk_states, int64_t b0, int64_t b1) {
    const int64_t L = p->length, D = p->dim, N = p->n, n_chunks = (L + CHUNK - 1) / CHUNK;
    float *h = calloc((size_t)(N * D + 3 * D), sizeof(float));
    float *du = h + N * D, *y = du + D, *dl = y + D;
    for (int64_t bi = b0; bi < b1; bi++) {
        memset(h, 0, sizeof(float) * N * D);
        for (int64_t i = 0; i < L; i++) {
            const int64_t t = p->reverse ? L - 1 - i : i;
            if (i % CHUNK == 0)
                memcpy(chunk_states + (bi * n_chunks + i / CHUNK) * N * D, h, sizeof(float) * N * D);
            const float *u = p->u + bi * p->su_b + t * p->su_t;
            scan_step(p, bi, t, h, dl, du, y, NULL, NULL, 0);
            float *o = out + (bi * L + t) * D;
            const float *z = p->z ? p->z + bi * p->sz_b + t * p->sz_t : NULL;
#pragma omp simd
            for (int64_t d = 0; d < D; d++) {
                float v = y[d] + (p->d_skip ? p->d_skip[d] * u[d] : 0.0f);
                if (z) v *= z[d] / (1.0f + fast_exp(-z[d]));
                o[d] = v;
            }
        }
    }
    free(h);
}

/* grad_out (batch, L, D) with strides (sg_b, sg_t); outputs contiguous: grad_u, grad_delta (of the
 * raw delta, before bias and softplus), grad_z (batch, L, D), grad_b, grad_c (batch, L, N);
 * accumulated in double over rows [b0, b1) and time: grad_a_t (N, D), grad_d_skip, grad_bias (D). */
MULTIVERSION
void scan_backward(const scan_args *p, const float *chunk_states, const float *grad_out, int64_t sg_b,
                   int64_t sg_t, float *grad_u, float *grad_delta, float *grad_z, float *grad_b,
                   float *grad_c, double *grad_a_t, double *grad_d_skip, double *grad_bias, int64_t b0,
                   int64_t b1) {
    const int64_t L = p->length, D = p->dim, N = p->n, n_chunks = (L + CHUNK - 1) / CHUNK;
    const int64_t ND = N * D;
    /* per chunk step: decay and state (N, D); y before the skip, delta*u, delta (D) */
    float *decay = malloc(sizeof(float) * (size_t)(CHUNK * (2 * ND + 3 * D) + 2 * ND + 3 * D));
    float *states = decay + CHUNK * ND, *ybuf = states + CHUNK * ND, *dubuf = ybuf + CHUNK * D;
    float *dlbuf = dubuf + CHUNK * D, *carry = dlbuf + CHUNK * D, *h = carry + ND;
    float *gy = h + ND, *gdu = gy + D, *gdl = gdu + D;
    for (int64_t bi = b0; bi < b1; bi++) {
        memset(carry, 0, sizeof(float) * ND);
        for (int64_t ch = n_chunks - 1; ch >= 0; ch--) {
            const int64_t i0 = ch * CHUNK, i1 = i0 + CHUNK < L ? i0 + CHUNK : L;
            memcpy(h, chunk_states + (bi * n_chunks + ch) * ND, sizeof(float) * ND);
            for (int64_t i = i0; i < i1; i++) {  /* recompute the chunk */
                const int64_t t = p->reverse ? L - 1 - i : i, k = i - i0;
                scan_step(p, bi, t, h, dlbuf + k * D, dubuf + k * D, ybuf + k * D, decay + k * ND, states + k * ND,
                          1);
            }
            for (int64_t i = i1 - 1; i >= i0; i--) {  /* reverse recurrence */
                const int64_t t = p->reverse ? L - 1 - i : i, k = i - i0;
                const float *u = p->u + bi * p->su_b + t * p->su_t, *dl = dlbuf + k * D;
                const float *raw = p->delta + bi * p->sd_b + t * p->sd_t, *bias = p->delta_bias;
                const float *go = grad_out + bi * sg_b + t * sg_t, *y = ybuf + k * D, *du = dubuf + k * D;
                const float *z = p->z ? p->z + bi * p->sz_b + t * p->sz_t : NULL;
                const int64_t row = (bi * L + t) * D;
#pragma omp simd
                for (int64_t d = 0; d < D; d++) {
                    float full = y[d] + (p->d_skip ? p->d_skip[d] * u[d] : 0.0f);
                    float g = go[d];
                    if (z) {
                        float sig = 1.0f / (1.0f + fast_exp(-z[d]));
                        grad_z[row + d] = g * full * sig * (1.0f + z[d] * (1.0f - sig));
                        g *= z[d] * sig;
                    }
                    gy[d] = g;
                    gdu[d] = 0.0f;
                    gdl[d] = 0.0f;
                }
                if (p->d_skip) {
#pragma omp simd
                    for (int64_t d = 0; d < D; d++) grad_d_skip[d] += (double)(gy[d] * u[d]);
                }
                const float *prev = i > i0 ? states + (k - 1) * ND : chunk_states + (bi * n_chunks + ch) * ND;
                for (int64_t s = 0; s < N; s++) {
                    const float bn = p->b[bi * p->sb_b + t * p->sb_t + s * p->sb_n];
                    const float cn = p->c[bi * p->sc_b + t * p->sc_t + s * p->sc_n];
                    const float *a = p->a_t + s * D, *dec = decay + k * ND + s * D;
                    const float *st = states + k * ND + s * D, *hp = prev + s * D;
                    float *cs = carry + s * D;
                    double *ga = grad_a_t + s * D;
                    float acc_c = 0.0f, acc_b = 0.0f;
#pragma omp simd reduction(+ : acc_c, acc_b)
                    for (int64_t d = 0; d < D; d++) {
                        float g = gy[d] * cn + cs[d];
                        acc_c += gy[d] * st[d];
                        acc_b += g * du[d];
                        gdu[d] += g * bn;
                        float x = g * hp[d] * dec[d];
                        gdl[d] += x * a[d];
                        ga[d] += (double)(x * dl[d]);
                        cs[d] = dec[d] * g;
                    }
                    grad_c[(bi * L + t) * N + s] = acc_c;
                    grad_b[(bi * L + t) * N + s] = acc_b;
                }
                const float *d_skip = p->d_skip;
                const int softplus = p->softplus;
#pragma omp simd
                for (int64_t d = 0; d < D; d++) {
                    grad_u[row + d] = gdu[d] * dl[d] + (d_skip ? gy[d] * d_skip[d] : 0.0f);
                    float g = gdl[d] + gdu[d] * u[d];
                    float x = raw[d] + (bias ? bias[d] : 0.0f);
                    grad_delta[row + d] = softplus ? g / (1.0f + fast_exp(-x)) : g;  /* softplus' = sigmoid */
                }
                if (grad_bias) {
#pragma omp simd
                    for (int64_t d = 0; d < D; d++) grad_bias[d] += (double)grad_delta[row + d];
                }
            }
        }
    }
    free(decay);
}

/* Depthwise causal conv1d (kernel K, zero history) followed by SiLU, channel-last, in the scan's
 * time order: u_i = silu(bias + sum_k w_k x_{i-(K-1)+k}), i the step index (t = L-1-i if reverse, so
 * the backward branch's conv on the flipped sequence needs no flip). x: (batch, L, D) with strides
 * (sx_b, sx_t), unit stride in D; w_t: (K, D) contiguous; out u: (batch, L, D) contiguous. */
/* The conv's pre-activation at step i of one batch row: out = bias + sum_k w_k x_{i-(K-1)+k}. */
static inline void conv_step(int64_t L, int64_t D, int64_t K, const float *x, int64_t sx_t, const float *w_t,
                             const float *bias, int reverse, int64_t i, float *out) {
#pragma omp simd
    for (int64_t d = 0; d < D; d++) out[d] = bias ? bias[d] : 0.0f;
    for (int64_t k = 0; k < K; k++) {
        const int64_t j = i - (K - 1) + k;
        if (j < 0) continue;
        const float *xs = x + (reverse ? L - 1 - j : j) * sx_t, *wk = w_t + k * D;
#pragma omp simd
        for (int64_t d = 0; d < D; d++) out[d] += wk[d] * xs[d];
    }
}

MULTIVERSION
void conv_silu_forward(int64_t L, int64_t D, int64_t K, const float *x, int64_t sx_b, int64_t sx_t,
                       const float *w_t, const float *bias, int reverse, float *out, int64_t b0, int64_t b1) {
    for (int64_t bi = b0; bi < b1; bi++) {
        for (int64_t i = 0; i < L; i++) {
            const int64_t t = reverse ? L - 1 - i : i;
            float *o = out + (bi * L + t) * D;
            conv_step(L, D, K, x + bi * sx_b, sx_t, w_t, bias, reverse, i, o);
#pragma omp simd
            for (int64_t d = 0; d < D; d++) o[d] = o[d] / (1.0f + fast_exp(-o[d]));
        }
    }
}

/* grad_u: (batch, L, D) contiguous. grad_x: (batch, L, D) contiguous, written; grad_w_t (K, D) and
 * grad_bias (D) accumulated in double over rows [b0, b1). acc: a (D) scratch row per call. */
MULTIVERSION
void conv_silu_backward(int64_t L, int64_t D, int64_t K, const float *x, int64_t sx_b, int64_t sx_t,
                        const float *w_t, const float *bias, int reverse, const float *grad_u, float *grad_x,
                        double *grad_w_t, double *grad_bias, int64_t b0, int64_t b1) {
    float *acc = malloc(sizeof(float) * (size_t)D);
    for (int64_t bi = b0; bi < b1; bi++) {
        memset(grad_x + bi * L * D, 0, sizeof(float) * (size_t)(L * D));
        for (int64_t i = 0; i < L; i++) {
            const int64_t t = reverse ? L - 1 - i : i;
            const float *gu = grad_u + (bi * L + t) * D;
            conv_step(L, D, K, x + bi * sx_b, sx_t, w_t, bias, reverse, i, acc);
#pragma omp simd
            for (int64_t d = 0; d < D; d++) {  /* d silu(a) / da = s (1 + a (1 - s)) */
                float s = 1.0f / (1.0f + fast_exp(-acc[d]));
                acc[d] = gu[d] * s * (1.0f + acc[d] * (1.0f - s));
            }
            if (grad_bias) {
#pragma omp simd
                for (int64_t d = 0; d < D; d++) grad_bias[d] += (double)acc[d];
            }
            for (int64_t k = 0; k < K; k++) {
                const int64_t j = i - (K - 1) + k;
                if (j < 0) continue;
                const int64_t tj = reverse ? L - 1 - j : j;
                const float *xs = x + bi * sx_b + tj * sx_t, *wk = w_t + k * D;
                float *gx = grad_x + (bi * L + tj) * D;
                double *gw = grad_w_t + k * D;
#pragma omp simd
                for (int64_t d = 0; d < D; d++) {
                    gx[d] += wk[d] * acc[d];
                    gw[d] += (double)(acc[d] * xs[d]);
                }
            }
        }
    }
    free(acc);
}
