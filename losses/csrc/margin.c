/* Fused forward + analytic gradient of the margin losses (ACLS, MbLS) on CPU.
 *
 * Built on first use by losses/_native.py with the system C compiler and called through
 * ctypes; losses/_fused.py computes the same formulas with PyTorch operators and runs whenever
 * this library is unavailable, or the logits are not on the CPU. One call reads the logits
 * once for the value and writes the gradient once, where the eager version dispatches ~30
 * operators, each a pass over the logits or a per-row tensor.
 *
 * Compiled with -O3 -march=native -ffast-math so that the loops vectorize: every sum is a
 * plain reduction (its order may change: results move in the last bits only), comparisons are
 * exact, and exp is the branch-free exp_f32/exp_f64 below (exact range reduction and a Taylor
 * polynomial, accurate to about 1 ulp), which the compiler inlines into the vector loops.
 * A NaN logit still makes the loss NaN.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#define TILE 64          /* pixels per unit in the dense layout */
#define MAX_THREADS 256

enum { ACLS = 0, MBLS = 1 };

/* exp(x) for finite x <= 88 (float) / x <= 709 (double); the kernels call it on
 * z - zmax + shift <= 60. x = n ln2 + r with |r| <= ln2 / 2 (Cody-Waite: ln2 in two parts, the
 * first exact times n, applied with fma so that -ffast-math cannot reorder it); exp(r) by its
 * Taylor polynomial (truncation below 1e-8 / 1e-17 relative); 2^n written in the exponent bits.
 * Measured over [-87, 60]: at most 1.3 ulp in both precisions. Below the smallest normal
 * result (x < -87 / -708) it returns 0. */
static inline float exp_f32(float x) {
    const float n = rintf(x * 1.44269504088896341f);
    const float r = fmaf(n, 2.12194440e-4f, fmaf(-n, 0.693359375f, x)); /* fma: no reordering */
    float p = 1.0f / 40320.0f;
    p = p * r + 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return x < -87.0f ? 0.0f : p * scale;
}

static inline double exp_f64(double x) {
    const double n = rint(x * 1.4426950408889634074);
    const double r = fma(-n, 1.90821492927058770002e-10, fma(-n, 6.93147180369123816490e-01, x));
    double p = 1.0 / 6227020800.0; /* 1/13! */
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    const int64_t bits = (int64_t)((int32_t)n + 1023) << 52;
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return x < -708.0 ? 0.0 : p * scale;
}
enum { F32 = 0, F64 = 1 };

/* Everything one call needs; the units are split among threads. */
struct job {
    int kind, dtype;
    const void *z;       /* logits (B, K, P), contiguous */
    const int64_t *y;    /* target (B, P): class indices or `ignore` */
    void *g;             /* gradient (B, K, P), or NULL when not needed */
    void *out[3];        /* 0-dim results, logits' dtype: total, mean ce, mean regularizer */
    int64_t B, K, P, ignore;
    double scale;        /* 1 / number of valid rows: every valid row's weight */
    double margin;       /* M >= 0 */
    double shift;        /* min(M, 60): exponent offset, exp(z - zmax + shift) <= e^60 */
    double alpha;        /* weight of the regularizer */
    double pos_lambda;   /* ACLS only */
    double neg_scale;    /* ACLS only: neg_lambda / (K - 1), 0 when K == 1 */
};

/* Non-finite (inf or NaN) test on the bits: -ffast-math may assume that no value is NaN. */
static inline int nonfinite_f32(float x) {
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    return (b & 0x7f800000u) == 0x7f800000u;
}

static inline int nonfinite_f64(double x) {
    uint64_t b;
    memcpy(&b, &x, sizeof b);
    return (b & 0x7ff0000000000000ull) == 0x7ff0000000000000ull;
}

#define REAL float
#define SFX f32
#define NONFINITE nonfinite_f32
#define EXP exp_f32
#define LOG logf
#include "margin_impl.h"
#undef REAL
#undef SFX
#undef EXP
#undef LOG
#undef NONFINITE

#define REAL double
#define SFX f64
#define NONFINITE nonfinite_f64
#define EXP exp_f64
#define LOG log
#include "margin_impl.h"
#undef REAL
#undef SFX
#undef EXP
#undef LOG
#undef NONFINITE

/* Process units [lo, hi): acc[0] += sum of the valid rows' CE, acc[1] += sum of their
 * regularizer (MbLS: hinge sum); nonzero when a valid row holds a non-finite logit (the caller
 * then stops: PyTorch's own code gives the NaN/inf result). */
typedef int (*unit_fn)(const struct job *, int64_t, int64_t, double *);

static unit_fn pick(const struct job *jb) {
    if (jb->P == 1) return jb->dtype == F32 ? rows_f32 : rows_f64;
    return jb->dtype == F32 ? tiles_f32 : tiles_f64;
}

struct part {
    const struct job *jb;
    unit_fn fn;
    int64_t lo, hi;
    double acc[2];
    int nonfinite;
};

static void *run_part(void *arg) {
    struct part *pt = (struct part *)arg;
    pt->nonfinite = pt->fn(pt->jb, pt->lo, pt->hi, pt->acc);
    return NULL;
}

int lc_abi_version(void) { return 4; }

static void store(void *dst, int dtype, double value) {
    if (dtype == F32)
        *(float *)dst = (float)value;
    else
        *(double *)dst = value;
}

/* Write the mean cross-entropy ce and the mean regularizer reg over the valid rows, and
 * total = ce + alpha * reg, to jb->out; the gradient of total to jb->g when it is set.
 * jb->scale is computed here. Returns 0; 1 when a target is neither in [0, K) nor `ignore`
 * (its value in *bad, nothing else written); 2 for arguments out of range; 3 when a valid row
 * holds an inf or NaN logit (results not written, gradient partly written). With no valid
 * row every result is 0 and so is the gradient. */
int lc_margin(struct job *jb, int nthreads, int64_t *bad) {
    if (jb->kind < 0 || jb->kind > 1 || jb->dtype < 0 || jb->dtype > 1 || jb->K < 1 ||
        jb->B < 0 || jb->P < 0)
        return 2;
    const int64_t rows = jb->B * jb->P;
    int64_t valid = 0;
    for (int64_t i = 0; i < rows; ++i) {
        const int64_t y = jb->y[i];
        if (y == jb->ignore) continue;
        if (y < 0 || y >= jb->K) {
            *bad = y;
            return 1;
        }
        ++valid;
    }
    jb->scale = valid > 0 ? 1.0 / (double)valid : 0.0;
    /* P == 0 (an empty spatial dim): no units, the sums stay 0 */
    const int64_t units = jb->P == 1 ? jb->B : jb->B * ((jb->P + TILE - 1) / TILE);
    if (nthreads > MAX_THREADS) nthreads = MAX_THREADS;
    if (nthreads > units) nthreads = (int)units;
    if (nthreads < 1) nthreads = 1;
    struct part parts[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    int started[MAX_THREADS];
    const unit_fn fn = pick(jb);
    for (int t = 0; t < nthreads; ++t) {
        parts[t] = (struct part){jb, fn, units * t / nthreads, units * (t + 1) / nthreads, {0, 0}, 0};
        started[t] = t > 0 && pthread_create(&tid[t], NULL, run_part, &parts[t]) == 0;
    }
    run_part(&parts[0]);
    for (int t = 1; t < nthreads; ++t) {
        if (started[t])
            pthread_join(tid[t], NULL);
        else
            run_part(&parts[t]); /* could not start a thread: do its share here */
    }
    double ce = 0.0, reg = 0.0;
    for (int t = 0; t < nthreads; ++t)
        if (parts[t].nonfinite) return 3;
    for (int t = 0; t < nthreads; ++t) { /* fixed order: the same result on every run */
        ce += parts[t].acc[0];
        reg += parts[t].acc[1];
    }
    ce *= jb->scale;                            /* every valid row weighs 1 / #valid */
    reg *= jb->kind == MBLS ? jb->scale / (double)jb->K : jb->scale; /* MbLS: hinge mean */
    store(jb->out[0], jb->dtype, ce + jb->alpha * reg);
    store(jb->out[1], jb->dtype, ce);
    store(jb->out[2], jb->dtype, reg);
    return 0;
}
