// crop.cu: batched square patch crops out of [N, C, H, W] images and their scatter-add backward.
//
// Contract (P boxes as int [P, 3] = (image, x, y), the patch's top-left corner; side S)
//   crop_patches_fwd_f32(images [N,C,H,W], boxes, patches [P,C,S,S], N, P, C, H, W, S):
//     patches[p,c,r,t] = images[image_p, c, y_p + r, x_p + t] (a plain copy, no resampling).
//   crop_patches_bwd_f32(dpatches [P,C,S,S], boxes, dimages [N,C,H,W] (zeroed by the launcher),
//     N, P, C, H, W, S): dimages[image_p, c, y_p + r, x_p + t] += dpatches[p,c,r,t], atomicAdd
//     (overlapping windows sum in an unspecified order; the CPU adds patch by patch).
//   The launcher checks every box on the host exactly as ops::crop_patches does (image < N,
//   x + S <= W, y + S <= H) and refuses the call otherwise; the kernels still skip a box outside
//   the image so that no input can address memory outside the buffers.
// Checked against: ops::crop_patches (Tensor + autograd).
// Launch geometry: 1-D grid-stride, 256 threads, one thread per patch element (both passes).
// Check: cargo test --release --test cuda_kernels_compile; kernels/emu/check.sh;
//        ssod selftest --device cuda.

#include "common.cuh"

// The offset of patch element (p, c, r, t) in the images, or -1 when its box is outside them.
__device__ __forceinline__ long long crop_src(const int* boxes, long long p, long long c,
                                              long long r, long long t, long long N, long long C,
                                              long long H, long long W, long long S) {
    long long img = boxes[3 * p], x = boxes[3 * p + 1], y = boxes[3 * p + 2];
    if (img < 0 || img >= N || x < 0 || y < 0 || x + S > W || y + S > H) return -1;
    return ((img * C + c) * H + y + r) * W + x + t;
}

extern "C" __global__ void crop_patches_fwd_f32(const float* __restrict__ images,
                                                const int* __restrict__ boxes,
                                                float* __restrict__ patches, long long N,
                                                long long P, long long C, long long H, long long W,
                                                long long S) {
    GRID_STRIDE(i, P * C * S * S) {
        long long t = i % S, r = (i / S) % S, c = (i / (S * S)) % C, p = i / (S * S * C);
        long long src = crop_src(boxes, p, c, r, t, N, C, H, W, S);
        patches[i] = src >= 0 ? images[src] : 0.0f;
    }
}

extern "C" __global__ void crop_patches_bwd_f32(const float* __restrict__ dpatches,
                                                const int* __restrict__ boxes,
                                                float* __restrict__ dimages, long long N,
                                                long long P, long long C, long long H, long long W,
                                                long long S) {
    GRID_STRIDE(i, P * C * S * S) {
        long long t = i % S, r = (i / S) % S, c = (i / (S * S)) % C, p = i / (S * S * C);
        long long dst = crop_src(boxes, p, c, r, t, N, C, H, W, S);
        if (dst >= 0) atomicAdd(&dimages[dst], dpatches[i]);
    }
}
