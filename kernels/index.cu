// index.cu: indexing along an axis (index_select, gather) and their scatter-add backwards, f32.
//
// Contract (x viewed as [outer, len, inner] around the axis; indices as int after validation)
//   index_check_f32(idx_f (float) [n], idx (int) [n], bad (int) [1], n, bound): idx = (int)idx_f
//     where idx_f is a whole number in 0..bound; otherwise idx = -1 and bad = min(bad, position)
//     (atomicMin; the launcher sets bad = n first and refuses the indices when bad < n). The same
//     test as ops::index's `to_indices` (fract == 0, 0 <= v < bound, finite).
//   index_select_fwd_f32(x, idx [k], y, outer, len, inner, k): y [outer,k,inner],
//     y[o,j,t] = x[o,idx[j],t].
//   index_select_bwd_f32(dy, idx [k], dx, outer, len, inner, k): dx [outer,len,inner] (zeroed by
//     the launcher) += dy[o,j,t] at (o, idx[j], t): atomicAdd, so repeated indices sum in an
//     unspecified order (f32 rounding differs from the CPU's j order by a few ulps).
//   gather_fwd_f32(x, idx [outer,k,inner], y, outer, len, inner, k): y[o,j,t] = x[o,idx[o,j,t],t]
//     (torch.gather); gather_bwd_f32(dy, idx, dx, ...): dx[o,idx[o,j,t],t] += dy[o,j,t], atomicAdd.
//   Every kernel skips an index outside 0..len (y = 0, nothing added) so that no index can
//   address memory outside the buffers; the launchers only pass validated indices.
// Checked against: ops::index_select, ops::gather (Tensor + autograd).
// Launch geometry: 1-D grid-stride, 256 threads, one thread per index (check), per output
//   element (fwd) or per upstream-gradient element (bwd).
// Check: cargo test --release --test cuda_kernels_compile; kernels/emu/check.sh;
//        ssod selftest --device cuda.

#include "common.cuh"

extern "C" __global__ void index_check_f32(const float* __restrict__ idx_f, int* __restrict__ idx,
                                           int* __restrict__ bad, long long n, long long bound) {
    GRID_STRIDE(i, n) {
        float f = idx_f[i];
        // Same order of tests as the CPU; NaN and ±inf fail `f == floorf(f)` or the range test.
        bool ok = isfinite(f) && f == floorf(f) && f >= 0.0f && f < (float)bound;
        if (ok) {
            idx[i] = (int)f;
        } else {
            idx[i] = -1;
            atomicMin(bad, (int)i);
        }
    }
}

extern "C" __global__ void index_select_fwd_f32(const float* __restrict__ x,
                                                const int* __restrict__ idx,
                                                float* __restrict__ y, long long outer,
                                                long long len, long long inner, long long k) {
    GRID_STRIDE(p, outer * k * inner) {
        long long t = p % inner, j = (p / inner) % k, o = p / (inner * k);
        long long i = idx[j];
        y[p] = (i >= 0 && i < len) ? x[(o * len + i) * inner + t] : 0.0f;
    }
}

extern "C" __global__ void index_select_bwd_f32(const float* __restrict__ dy,
                                                const int* __restrict__ idx,
                                                float* __restrict__ dx, long long outer,
                                                long long len, long long inner, long long k) {
    GRID_STRIDE(p, outer * k * inner) {
        long long t = p % inner, j = (p / inner) % k, o = p / (inner * k);
        long long i = idx[j];
        if (i >= 0 && i < len) atomicAdd(&dx[(o * len + i) * inner + t], dy[p]);
    }
}

extern "C" __global__ void gather_fwd_f32(const float* __restrict__ x, const int* __restrict__ idx,
                                          float* __restrict__ y, long long outer, long long len,
                                          long long inner, long long k) {
    GRID_STRIDE(p, outer * k * inner) {
        long long t = p % inner, o = p / (inner * k);
        long long i = idx[p];
        y[p] = (i >= 0 && i < len) ? x[(o * len + i) * inner + t] : 0.0f;
    }
}

extern "C" __global__ void gather_bwd_f32(const float* __restrict__ dy, const int* __restrict__ idx,
                                          float* __restrict__ dx, long long outer, long long len,
                                          long long inner, long long k) {
    GRID_STRIDE(p, outer * k * inner) {
        long long t = p % inner, o = p / (inner * k);
        long long i = idx[p];
        if (i >= 0 && i < len) atomicAdd(&dx[(o * len + i) * inner + t], dy[p]);
    }
}
