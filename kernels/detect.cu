// detect.cu: YOLOX inference decode and the pairwise suppression masks of greedy NMS, f32.
//
// Contract
//   decode_outputs_f32(raw [B,A,R], grid [A,3] = (gx, gy, stride), out [B,A,R], B, A, R),
//     R = 5 + C: out[b,a] = (cx, cy, w, h, obj, cls_1..cls_C) with cx = (tx + gx)·s,
//     cy = (ty + gy)·s, w = exp(tw)·s, h = exp(th)·s (no +0.5 offset, exp not clamped),
//     obj = σ(o), cls_j = σ(c_j) (stable sigmoid), as detect::decode::decode_image_f32.
//   nms_mask_f32(boxes [N,4] xyxy sorted by score descending, cls (int) [N], mask (u64)
//     [N, W = ceil(N/64)], N, W, thr, has_cls): bit (j mod 64) of mask[i, j/64] is set when
//     j > i, (has_cls == 0 or cls[i] == cls[j]) and IoU(box_i, box_j) > thr, the classic GPU NMS
//     layout; the greedy pass over the rows runs on the host (src/backend/cuda/detect.rs). IoU as
//     detect::nms::iou_xyxy, operation for operation: areas (x2-x1)·(y2-y1) with no +1,
//     intersection sides clamped at 0, a NaN IoU (empty union) suppresses nothing. The products
//     and sums use the _rn intrinsics so that no FMA contraction changes a rounding and flips a
//     comparison with thr.
// Checked against: detect::decode::decode_batch_f32 (decode); detect::nms::nms and
//   detect::nms::batched_nms (the kept indices after the host's greedy pass).
// Launch geometry: 1-D grid-stride, 256 threads: one thread per (image, anchor) for decode, one
//   per (box i, 64-column word) for the mask (the boxes are read from global memory through
//   L1/L2 rather than staged in shared memory: simpler, and correct for any block size).
// Check: cargo test --release --test cuda_kernels_compile; kernels/emu/check.sh;
//        ssod selftest --device cuda.

#include "common.cuh"

extern "C" __global__ void decode_outputs_f32(const float* __restrict__ raw,
                                              const float* __restrict__ grid,
                                              float* __restrict__ out, long long B, long long A,
                                              long long R) {
    GRID_STRIDE(i, B * A) {
        long long a = i % A;
        const float* r = raw + i * R;
        float* o = out + i * R;
        float gx = grid[3 * a], gy = grid[3 * a + 1], s = grid[3 * a + 2];
        o[0] = (r[0] + gx) * s;
        o[1] = (r[1] + gy) * s;
        o[2] = expf(r[2]) * s;
        o[3] = expf(r[3]) * s;
        for (long long j = 4; j < R; ++j) o[j] = sigmoid_stable(r[j]);
    }
}

__device__ __forceinline__ float iou_xyxy(const float* a, const float* b) {
    float iw = fmaxf(__fsub_rn(fminf(a[2], b[2]), fmaxf(a[0], b[0])), 0.0f);
    float ih = fmaxf(__fsub_rn(fminf(a[3], b[3]), fmaxf(a[1], b[1])), 0.0f);
    float inter = __fmul_rn(iw, ih);
    float area_a = __fmul_rn(__fsub_rn(a[2], a[0]), __fsub_rn(a[3], a[1]));
    float area_b = __fmul_rn(__fsub_rn(b[2], b[0]), __fsub_rn(b[3], b[1]));
    return __fdiv_rn(inter, __fsub_rn(__fadd_rn(area_a, area_b), inter));
}

extern "C" __global__ void nms_mask_f32(const float* __restrict__ boxes,
                                        const int* __restrict__ cls,
                                        unsigned long long* __restrict__ mask, long long N,
                                        long long W, float thr, int has_cls) {
    GRID_STRIDE(q, N * W) {
        long long i = q / W, w = q % W;
        const float* bi = boxes + 4 * i;
        unsigned long long bits = 0ULL;
        long long j0 = w * 64, j1 = j0 + 64 < N ? j0 + 64 : N;
        for (long long j = (j0 > i + 1 ? j0 : i + 1); j < j1; ++j) {
            if (has_cls && cls[i] != cls[j]) continue;
            if (iou_xyxy(bi, boxes + 4 * j) > thr) bits |= 1ULL << (j - j0);
        }
        mask[q] = bits;
    }
}
