// simota.cu: SimOTA label assignment for one image (no gradients), as src/detect/simota.rs.
//
// Contract (A anchors, G ground-truth boxes, C classes; boxes cxcywh in input pixels)
//   simota_cost_f32(pred [A,4], cls [A,C], obj [A], grids [A,2], strides [A], gt [G,4],
//                   gt_cls [G] (int), cost [G,A], iou [G,A], cand [A] (int), A, G, C, mode, radius):
//     one thread per anchor. cand = the anchor centre ((gx+0.5)·s, (gy+0.5)·s) passes the
//     geometry prior for some GT (mode 0 "release": in box OR within radius·s of the centre;
//     mode 1 "2023": within radius·s of the centre only, tested as YOLOX's
//     min(xc-(cx-r), ...) > 0). For candidates: iou = IoU(gt, pred) (no eps, 0 on an empty
//     union), cost = BCE(sqrt(σ(cls)·σ(obj)), onehot) + 3·(−ln(iou + 1e-8)) + penalty when
//     the pair is not in the prior (1e5 release: not in box AND centre; 1e6 2023). Non-candidate
//     columns: cost = +inf, iou = 0.
//   simota_dynamic_k_f32(cost, iou, cand, picked [G,A] (int), A, G): one block per GT. k =
//     max(1, int(Σ of the top-min(10, #cand) candidate IoUs, summed from the largest)), then the
//     k cheapest candidates (ties: lower anchor index first) get picked[g, a] = 1; the row is
//     zeroed first. k rounds of block arg-min (k <= 10): deterministic, no atomics.
//   simota_resolve_f32(cost, iou, picked, matched [A] (int), pred_iou [A], A, G): one thread per
//     anchor: matched = −1 (background), the one GT that picked it, or, when several did, the GT
//     of least cost over ALL GTs (first on ties); pred_iou = iou[matched, a] (0 for background).
// Checked against: detect::simota::simota_assign (assignment) and a plain CPU cost matrix.
// Launch geometry: cost/resolve 1-D grid-stride, 256 threads; dynamic_k one 256-thread block per
//   GT (blockDim.x must be 256).
// Check: cargo test --release --test cuda_kernels_compile; ssod selftest --device cuda.

#define THREADS 256
#include "common.cuh"

__device__ __forceinline__ float log_clamped(float v) { return fmaxf(logf(v), -100.0f); }

__device__ __forceinline__ float iou_cxcywh(const float* a, const float* b) {
    float ax1 = a[0] - a[2] / 2.0f, ay1 = a[1] - a[3] / 2.0f, ax2 = a[0] + a[2] / 2.0f,
          ay2 = a[1] + a[3] / 2.0f;
    float bx1 = b[0] - b[2] / 2.0f, by1 = b[1] - b[3] / 2.0f, bx2 = b[0] + b[2] / 2.0f,
          by2 = b[1] + b[3] / 2.0f;
    float tlx = fmaxf(ax1, bx1), tly = fmaxf(ay1, by1), brx = fminf(ax2, bx2),
          bry = fminf(ay2, by2);
    float inter = (tlx < brx && tly < bry) ? (brx - tlx) * (bry - tly) : 0.0f;
    float uni = a[2] * a[3] + b[2] * b[3] - inter;
    return uni > 0.0f ? inter / uni : 0.0f;
}

// Whether anchor centre (xc, yc) passes the prior of box b: *any_ok (candidate), *pair_ok (no
// penalty).
__device__ __forceinline__ void prior(const float* b, float xc, float yc, float r, int mode,
                                      bool* any_ok, bool* pair_ok) {
    if (mode == 0) {
        float in_box = fminf(fminf(xc - (b[0] - b[2] / 2.0f), (b[0] + b[2] / 2.0f) - xc),
                             fminf(yc - (b[1] - b[3] / 2.0f), (b[1] + b[3] / 2.0f) - yc));
        float in_ctr = fminf(fminf(xc - (b[0] - r), (b[0] + r) - xc),
                             fminf(yc - (b[1] - r), (b[1] + r) - yc));
        bool ib = in_box > 0.0f, ic = in_ctr > 0.0f;
        *any_ok = ib || ic;
        *pair_ok = ib && ic;
    } else {
        // YOLOX's form (edges cx ± r rounded first), not |xc - cx| < r: the two differ one ulp
        // from an edge (src/detect/simota.rs `inside`).
        float in_ctr = fminf(fminf(xc - (b[0] - r), (b[0] + r) - xc),
                             fminf(yc - (b[1] - r), (b[1] + r) - yc));
        bool ic = in_ctr > 0.0f;
        *any_ok = ic;
        *pair_ok = ic;
    }
}

extern "C" __global__ void simota_cost_f32(const float* __restrict__ pred,
                                           const float* __restrict__ cls,
                                           const float* __restrict__ obj,
                                           const float* __restrict__ grids,
                                           const float* __restrict__ strides,
                                           const float* __restrict__ gt,
                                           const int* __restrict__ gt_cls,
                                           float* __restrict__ cost, float* __restrict__ iou,
                                           int* __restrict__ cand, long long A, long long G,
                                           long long C, int mode, float radius) {
    const float inf = __int_as_float(0x7f800000);
    float penalty = mode == 0 ? 100000.0f : 1000000.0f;
    GRID_STRIDE(a, A) {
        float s = strides[a];
        float xc = (grids[2 * a] + 0.5f) * s, yc = (grids[2 * a + 1] + 0.5f) * s;
        float r = radius * s;
        bool any = false;
        for (long long g = 0; g < G; ++g) {
            bool ao, po;
            prior(gt + 4 * g, xc, yc, r, mode, &ao, &po);
            any = any || ao;
        }
        cand[a] = any ? 1 : 0;
        if (!any) {
            for (long long g = 0; g < G; ++g) {
                cost[g * A + a] = inf;
                iou[g * A + a] = 0.0f;
            }
            continue;
        }
        float so = sigmoid_stable(obj[a]);
        float neg_sum = 0.0f;
        for (long long k = 0; k < C; ++k) {
            float p = sqrtf(sigmoid_stable(cls[a * C + k]) * so);
            neg_sum += -log_clamped(1.0f - p);
        }
        for (long long g = 0; g < G; ++g) {
            int k = gt_cls[g];
            if (k < 0 || k >= C) k = 0;  // the launcher refuses such classes; stay in bounds
            float p = sqrtf(sigmoid_stable(cls[a * C + k]) * so);
            float cls_cost = neg_sum + log_clamped(1.0f - p) - log_clamped(p);
            float v = iou_cxcywh(gt + 4 * g, pred + 4 * a);
            bool ao, po;
            prior(gt + 4 * g, xc, yc, r, mode, &ao, &po);
            iou[g * A + a] = v;
            cost[g * A + a] = cls_cost + 3.0f * -logf(v + 1e-8f) + (po ? 0.0f : penalty);
        }
    }
}

// Block-wide selection of the best (value, index) pair; `better(v1,i1,v2,i2)` orders them.
struct Pick {
    float v;
    long long i;
};

__device__ __forceinline__ bool lower_cost(Pick x, Pick y) {
    if (y.i < 0) return x.i >= 0;
    if (x.i < 0) return false;
    return x.v < y.v || (x.v == y.v && x.i < y.i);
}
__device__ __forceinline__ bool higher_iou(Pick x, Pick y) {
    if (y.i < 0) return x.i >= 0;
    if (x.i < 0) return false;
    return x.v > y.v || (x.v == y.v && x.i < y.i);
}

template <bool MIN>
__device__ Pick block_best(Pick p, float* sv, long long* si) {
    sv[threadIdx.x] = p.v;
    si[threadIdx.x] = p.i;
    __syncthreads();
    for (int s = THREADS / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            Pick a = {sv[threadIdx.x], si[threadIdx.x]};
            Pick b = {sv[threadIdx.x + s], si[threadIdx.x + s]};
            bool take_b = MIN ? lower_cost(b, a) : higher_iou(b, a);
            if (take_b) {
                sv[threadIdx.x] = b.v;
                si[threadIdx.x] = b.i;
            }
        }
        __syncthreads();
    }
    Pick r = {sv[0], si[0]};
    __syncthreads();
    return r;
}

#define TOPK 10

extern "C" __global__ void simota_dynamic_k_f32(const float* __restrict__ cost,
                                                const float* __restrict__ iou,
                                                const int* __restrict__ cand,
                                                int* __restrict__ picked, long long A,
                                                long long G) {
    __shared__ float sv[THREADS];
    __shared__ long long si[THREADS];
    __shared__ long long chosen[TOPK];
    __shared__ float chosen_v[TOPK];
    __shared__ int count_sh[THREADS];
    for (long long g = blockIdx.x; g < G; g += gridDim.x) {
        const float* crow = cost + g * A;
        const float* irow = iou + g * A;
        int* prow = picked + g * A;
        int cnt = 0;
        for (long long a = threadIdx.x; a < A; a += THREADS) {
            prow[a] = 0;
            cnt += cand[a] ? 1 : 0;
        }
        count_sh[threadIdx.x] = cnt;
        __syncthreads();
        for (int s = THREADS / 2; s > 0; s >>= 1) {
            if (threadIdx.x < s) count_sh[threadIdx.x] += count_sh[threadIdx.x + s];
            __syncthreads();
        }
        long long n = count_sh[0];
        __syncthreads();
        if (n == 0) continue;  // uniform across the block
        int k_cand = n < TOPK ? (int)n : TOPK;
        // Top-k_cand IoUs, largest first.
        for (int r = 0; r < k_cand; ++r) {
            Pick best = {0.0f, -1};
            for (long long a = threadIdx.x; a < A; a += THREADS) {
                if (!cand[a]) continue;
                bool used = false;
                for (int q = 0; q < r; ++q) used = used || chosen[q] == a;
                if (used) continue;
                Pick p = {irow[a], a};
                if (higher_iou(p, best)) best = p;
            }
            Pick b = block_best<false>(best, sv, si);
            if (threadIdx.x == 0) {
                chosen[r] = b.i;
                chosen_v[r] = b.v;
            }
            __syncthreads();
        }
        __shared__ int k_sh;
        if (threadIdx.x == 0) {
            float sum = 0.0f;
            for (int r = 0; r < k_cand; ++r) sum += chosen_v[r];
            int k = (int)sum;  // truncation, as `as usize`
            if (k < 1) k = 1;
            if ((long long)k > n) k = (int)n;
            k_sh = k;
        }
        __syncthreads();
        int k = k_sh;
        // The k cheapest candidates; picked marks those already taken.
        for (int r = 0; r < k; ++r) {
            Pick best = {0.0f, -1};
            for (long long a = threadIdx.x; a < A; a += THREADS) {
                if (!cand[a] || prow[a]) continue;
                Pick p = {crow[a], a};
                if (lower_cost(p, best)) best = p;
            }
            Pick b = block_best<true>(best, sv, si);
            if (threadIdx.x == 0 && b.i >= 0) prow[b.i] = 1;
            __syncthreads();
        }
    }
}

extern "C" __global__ void simota_resolve_f32(const float* __restrict__ cost,
                                              const float* __restrict__ iou,
                                              const int* __restrict__ picked,
                                              int* __restrict__ matched,
                                              float* __restrict__ pred_iou, long long A,
                                              long long G) {
    GRID_STRIDE(a, A) {
        int count = 0;
        long long only = -1;
        for (long long g = 0; g < G; ++g) {
            if (picked[g * A + a]) {
                ++count;
                if (only < 0) only = g;
            }
        }
        long long m = -1;
        if (count == 1) {
            m = only;
        } else if (count > 1) {
            m = 0;
            for (long long g = 1; g < G; ++g) {
                if (cost[g * A + a] < cost[m * A + a]) m = g;
            }
        }
        matched[a] = (int)m;
        pred_iou[a] = m >= 0 ? iou[m * A + a] : 0.0f;
    }
}
