/* One precision of the fused margin kernels: included by margin.c with REAL, SFX, EXP, LOG,
 * NONFINITE defined.
 *
 * Two drivers walk the units of a job: rows() for P == 1 (classification rows, vectorized
 * over the classes) and tiles() for P > 1 (TILE consecutive pixels of one image with the
 * class dim 1, vectorized over the pixels). Each finds the max (and checks for inf/NaN), then
 * hands the unit to the loss's body: a pass for the exponentials (stored in the gradient) and
 * a pass that builds the regularizer and the analytic gradient. A unit is at most K * TILE
 * logits, so both passes read from L1/L2. Ignored rows are skipped: their logits reach neither
 * the sums nor the gradient (set to 0). A driver returns 1 as soon as a valid row holds an inf
 * or NaN logit, else 0.
 */

#define FN2(a, b) a##_##b
#define FN(a, b) FN2(a, b)

/* ---- ACLS: per row, CE + pos_lambda * T * [zmax - M]_+^2 + neg_scale * sum [zmax - z - M]_+^2
 * (T tied maxima); gradient w * (p - onehot(y) - cneg [zmax - z - M]_+ + cpos [zmax - M]_+ 1[z
 * = zmax]), cneg = 2 alpha neg_scale, cpos = 2 alpha pos_lambda. */

static inline void FN(acls_row, SFX)(const struct job *jb, const REAL *restrict zr,
                                     REAL *restrict gr, int64_t y, REAL zmax, double *sums) {
    const int64_t K = jb->K;
    const REAL margin = (REAL)jb->margin, w = (REAL)jb->scale;
    const REAL low = zmax - (REAL)jb->shift, over = zmax - margin > 0 ? zmax - margin : 0;
    REAL s = 0, neg = 0, ties = 0;
    if (gr) {
        for (int64_t k = 0; k < K; ++k) {
            const REAL e = EXP(zr[k] - low);
            gr[k] = e;
            s += e;
        }
        const REAL ws = w / s, wneg = (REAL)(2.0 * jb->alpha * jb->neg_scale) * w;
        const REAL wpos = (REAL)(2.0 * jb->alpha * jb->pos_lambda) * w * over;
        for (int64_t k = 0; k < K; ++k) {
            const REAL d = zmax - zr[k] - margin, h = d > 0 ? d : 0;
            const REAL tie = zr[k] == zmax ? (REAL)1 : (REAL)0;
            neg += h * h;
            ties += tie;
            gr[k] = gr[k] * ws - wneg * h + wpos * tie;
        }
        gr[y] -= w;
    } else {
        for (int64_t k = 0; k < K; ++k) {
            const REAL d = zmax - zr[k] - margin, h = d > 0 ? d : 0;
            s += EXP(zr[k] - low);
            neg += h * h;
            ties += zr[k] == zmax ? (REAL)1 : (REAL)0;
        }
    }
    sums[0] += (double)(LOG(s) - (zr[y] - low));
    sums[1] += jb->pos_lambda * (double)(ties * over * over) + jb->neg_scale * (double)neg;
}

static inline void FN(acls_tile, SFX)(const struct job *jb, const REAL *restrict zb,
                                      REAL *restrict gb, const int64_t *restrict yb, int64_t n,
                                      const REAL *restrict m, const REAL *restrict w,
                                      double *sums) {
    const int64_t K = jb->K, P = jb->P;
    const REAL margin = (REAL)jb->margin, shift = (REAL)jb->shift;
    const REAL cneg = (REAL)(2.0 * jb->alpha * jb->neg_scale);
    const REAL cpos = (REAL)(2.0 * jb->alpha * jb->pos_lambda);
    REAL low[TILE], over[TILE], s[TILE], neg[TILE], ties[TILE];
    for (int64_t t = 0; t < n; ++t) {
        low[t] = m[t] - shift;
        over[t] = m[t] - margin > 0 ? m[t] - margin : 0;
        s[t] = neg[t] = ties[t] = 0;
    }
    if (gb) {
        REAL ws[TILE], wneg[TILE], wpos[TILE];
        for (int64_t k = 0; k < K; ++k) {
            const REAL *restrict zk = zb + k * P;
            REAL *restrict gk = gb + k * P;
            for (int64_t t = 0; t < n; ++t) {
                const REAL e = EXP(zk[t] - low[t]);
                gk[t] = e;
                s[t] += e;
            }
        }
        for (int64_t t = 0; t < n; ++t) {
            ws[t] = w[t] / s[t];
            wneg[t] = cneg * w[t];
            wpos[t] = cpos * w[t] * over[t];
        }
        for (int64_t k = 0; k < K; ++k) {
            const REAL *restrict zk = zb + k * P;
            REAL *restrict gk = gb + k * P;
            for (int64_t t = 0; t < n; ++t) {
                const REAL d = m[t] - zk[t] - margin, h = d > 0 ? d : 0;
                const REAL tie = zk[t] == m[t] ? (REAL)1 : (REAL)0;
                neg[t] += h * h;
                ties[t] += tie;
                /* ignored pixel: 0, even when its logits are not finite */
                gk[t] = w[t] != 0 ? gk[t] * ws[t] - wneg[t] * h + wpos[t] * tie : 0;
            }
        }
    } else {
        for (int64_t k = 0; k < K; ++k) {
            const REAL *restrict zk = zb + k * P;
            for (int64_t t = 0; t < n; ++t) {
                const REAL d = m[t] - zk[t] - margin, h = d > 0 ? d : 0;
                s[t] += EXP(zk[t] - low[t]);
                neg[t] += h * h;
                ties[t] += zk[t] == m[t] ? (REAL)1 : (REAL)0;
            }
        }
    }
    for (int64_t t = 0; t < n; ++t) {
        if (w[t] == 0) continue;
        const int64_t at = yb[t] * P + t;
        if (gb) gb[at] -= w[t];
        sums[0] += (double)(LOG(s[t]) - (zb[at] - low[t]));
        sums[1] += jb->pos_lambda * (double)(ties[t] * over[t] * over[t]) +
                   jb->neg_scale * (double)neg[t];
    }
}

/* ---- MbLS: per row, CE + (1/K) sum [zmax - z - M]_+ with the max not detached; gradient
 * w * (p - onehot(y)) - w alpha/K at every violating entry, + w alpha/K per violation at the
 * max, shared evenly among tied maxima (the subgradient torch.amax uses). sums[1] collects the
 * hinge sum; the driver's caller divides it by K. */

static inline void FN(mbls_row, SFX)(const struct job *jb, const REAL *restrict zr,
                                     REAL *restrict gr, int64_t y, REAL zmax, double *sums) {
    const int64_t K = jb->K;
    const REAL w = (REAL)jb->scale, coef = (REAL)(jb->alpha / (double)K);
    const REAL low = zmax - (REAL)jb->shift, edge = zmax - (REAL)jb->margin;
    REAL s = 0, viol = 0, ties = 0, hinge = 0;
    if (gr) {
        for (int64_t k = 0; k < K; ++k) {
            const REAL e = EXP(zr[k] - low), d = edge - zr[k];
            gr[k] = e;
            s += e;
            hinge += d > 0 ? d : 0;
            viol += d > 0 ? (REAL)1 : (REAL)0;
            ties += zr[k] == zmax ? (REAL)1 : (REAL)0;
        }
        const REAL ws = w / s, wv = coef * w, wm = coef * w * viol / ties;
        for (int64_t k = 0; k < K; ++k) {
            const REAL d = edge - zr[k];
            gr[k] = gr[k] * ws - (d > 0 ? wv : 0) + (zr[k] == zmax ? wm : 0);
        }
        gr[y] -= w;
    } else {
        for (int64_t k = 0; k < K; ++k) {
            const REAL d = edge - zr[k];
            s += EXP(zr[k] - low);
            hinge += d > 0 ? d : 0;
        }
    }
    sums[0] += (double)(LOG(s) - (zr[y] - low));
    sums[1] += (double)hinge;
}

static inline void FN(mbls_tile, SFX)(const struct job *jb, const REAL *restrict zb,
                                      REAL *restrict gb, const int64_t *restrict yb, int64_t n,
                                      const REAL *restrict m, const REAL *restrict w,
                                      double *sums) {
    const int64_t K = jb->K, P = jb->P;
    const REAL shift = (REAL)jb->shift, margin = (REAL)jb->margin;
    const REAL coef = (REAL)(jb->alpha / (double)K);
    REAL low[TILE], edge[TILE], s[TILE], viol[TILE], ties[TILE], hinge[TILE];
    for (int64_t t = 0; t < n; ++t) {
        low[t] = m[t] - shift;
        edge[t] = m[t] - margin;
        s[t] = viol[t] = ties[t] = hinge[t] = 0;
    }
    if (gb) {
        REAL ws[TILE], wv[TILE], wm[TILE];
        for (int64_t k = 0; k < K; ++k) {
            const REAL *restrict zk = zb + k * P;
            REAL *restrict gk = gb + k * P;
            for (int64_t t = 0; t < n; ++t) {
                const REAL e = EXP(zk[t] - low[t]), d = edge[t] - zk[t];
                gk[t] = e;
                s[t] += e;
                hinge[t] += d > 0 ? d : 0;
                viol[t] += d > 0 ? (REAL)1 : (REAL)0;
                ties[t] += zk[t] == m[t] ? (REAL)1 : (REAL)0;
            }
        }
        for (int64_t t = 0; t < n; ++t) {
            ws[t] = w[t] / s[t];
            wv[t] = coef * w[t];
            wm[t] = coef * w[t] * viol[t] / ties[t];
        }
        for (int64_t k = 0; k < K; ++k) {
            const REAL *restrict zk = zb + k * P;
            REAL *restrict gk = gb + k * P;
            for (int64_t t = 0; t < n; ++t) {
                const REAL d = edge[t] - zk[t];
                const REAL v = gk[t] * ws[t] - (d > 0 ? wv[t] : 0) + (zk[t] == m[t] ? wm[t] : 0);
                gk[t] = w[t] != 0 ? v : 0; /* ignored pixel: 0, whatever its logits */
            }
        }
    } else {
        for (int64_t k = 0; k < K; ++k) {
            const REAL *restrict zk = zb + k * P;
            for (int64_t t = 0; t < n; ++t) {
                const REAL d = edge[t] - zk[t];
                s[t] += EXP(zk[t] - low[t]);
                hinge[t] += d > 0 ? d : 0;
            }
        }
    }
    for (int64_t t = 0; t < n; ++t) {
        if (w[t] == 0) continue;
        const int64_t at = yb[t] * P + t;
        if (gb) gb[at] -= w[t];
        sums[0] += (double)(LOG(s[t]) - (zb[at] - low[t]));
        sums[1] += (double)hinge[t];
    }
}

/* ---- drivers ----------------------------------------------------------------------------- */

/* Rows [lo, hi) of a (B, K) job; acc += the unweighted sums over the valid rows. */
static int FN(rows, SFX)(const struct job *jb, int64_t lo, int64_t hi, double *acc) {
    const int64_t K = jb->K;
    for (int64_t i = lo; i < hi; ++i) {
        const REAL *restrict zr = (const REAL *)jb->z + i * K;
        REAL *restrict gr = jb->g ? (REAL *)jb->g + i * K : NULL;
        const int64_t y = jb->y[i];
        if (y == jb->ignore) {
            if (gr) memset(gr, 0, (size_t)K * sizeof(REAL));
            continue;
        }
        REAL zmax = zr[0];
        int bad = 0;
        for (int64_t k = 0; k < K; ++k) {
            zmax = zr[k] > zmax ? zr[k] : zmax;
            bad |= NONFINITE(zr[k]);
        }
        if (bad) return 1;
        if (jb->kind == ACLS)
            FN(acls_row, SFX)(jb, zr, gr, y, zmax, acc);
        else
            FN(mbls_row, SFX)(jb, zr, gr, y, zmax, acc);
    }
    return 0;
}

/* Tiles [lo, hi) of a (B, K, P) job, tile u = pixels [p0, p0 + TILE) of image u / ntiles. */
static int FN(tiles, SFX)(const struct job *jb, int64_t lo, int64_t hi, double *acc) {
    const int64_t K = jb->K, P = jb->P, ntiles = (P + TILE - 1) / TILE;
    REAL m[TILE], w[TILE];
    int32_t bad[TILE];
    for (int64_t u = lo; u < hi; ++u) {
        const int64_t b = u / ntiles, p0 = (u % ntiles) * TILE;
        const int64_t n = P - p0 < TILE ? P - p0 : TILE;
        const REAL *restrict zb = (const REAL *)jb->z + b * K * P + p0;
        REAL *restrict gb = jb->g ? (REAL *)jb->g + b * K * P + p0 : NULL;
        const int64_t *restrict yb = jb->y + b * P + p0;
        for (int64_t t = 0; t < n; ++t) {
            m[t] = zb[t];
            w[t] = yb[t] == jb->ignore ? (REAL)0 : (REAL)jb->scale;
            bad[t] = 0;
        }
        for (int64_t k = 0; k < K; ++k) {
            const REAL *restrict zk = zb + k * P;
            for (int64_t t = 0; t < n; ++t) {
                m[t] = zk[t] > m[t] ? zk[t] : m[t];
                bad[t] |= NONFINITE(zk[t]);
            }
        }
        for (int64_t t = 0; t < n; ++t)
            if (bad[t] && w[t] != 0) return 1;
        if (jb->kind == ACLS)
            FN(acls_tile, SFX)(jb, zb, gb, yb, n, m, w, acc);
        else
            FN(mbls_tile, SFX)(jb, zb, gb, yb, n, m, w, acc);
    }
    return 0;
}

#undef FN
#undef FN2
