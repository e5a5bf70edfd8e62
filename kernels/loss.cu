// loss.cu: BCE on logits and the IoU-family box losses (forward and backward in one kernel), f32.
//
// Contract
//   bce_with_logits_fwd_f32(x [n], t [n], w [n], y [n], n, has_w):
//     y = (max(x,0) − x·t + log1p(e^{−|x|}))·(has_w ? w : 1)   (stable for |x| ~ 300)
//   bce_with_logits_bwd_f32(g [n], x, t, w, dx, dt, dw, n, has_w): gw = g·w (or g);
//     dx = gw·(σ(x) − t), dt = −gw·x, dw = g·(unweighted loss) (written only when has_w; w and
//     dw may be any buffer of n elements when has_w = 0).
//   box_loss_fwd_bwd_f32(pred [n,4], target [n,4], g [n], loss [n], dpred [n,4], n, kind):
//     boxes xyxy; loss per box and dpred = g · d loss/d pred (targets get no gradient: they are
//     constants in YOLOX). kind: 0 IoU (1 − IoU², union + 1e-16), 1 GIoU (1 − clamp(GIoU,−1,1)),
//     2 CIoU as mmdet (eps 1e-6 on heights/unions/c², α = [IoU>0.5]·v/(1−IoU+v) detached,
//     1 − clamp(CIoU,−1,1)), 3 CIoU as torchvision (eps 1e-7, α = v/(1−IoU+v+eps) detached).
//     The derivative follows the composite of src/detect/loss.rs op by op, including its
//     conventions at kinks: min/max give the gradient to the prediction on ties, clamp passes it
//     on the closed interval.
// Checked against: ops::bce_with_logits and detect::loss::box_loss (Tensor + autograd, grad of
//   Σ g·loss with respect to pred).
// Launch geometry: 1-D grid-stride, 256 threads, one thread per element / per box.
// Check: cargo test --release --test cuda_kernels_compile; ssod selftest --device cuda.

#include "common.cuh"

__device__ __forceinline__ float bce_raw(float x, float t) {
    return fmaxf(x, 0.0f) - x * t + log1pf(expf(-fabsf(x)));
}

extern "C" __global__ void bce_with_logits_fwd_f32(const float* __restrict__ x,
                                                   const float* __restrict__ t,
                                                   const float* __restrict__ w,
                                                   float* __restrict__ y, long long n, int has_w) {
    GRID_STRIDE(i, n) {
        float l = bce_raw(x[i], t[i]);
        y[i] = has_w ? l * w[i] : l;
    }
}

extern "C" __global__ void bce_with_logits_bwd_f32(const float* __restrict__ g,
                                                   const float* __restrict__ x,
                                                   const float* __restrict__ t,
                                                   const float* __restrict__ w,
                                                   float* __restrict__ dx, float* __restrict__ dt,
                                                   float* __restrict__ dw, long long n,
                                                   int has_w) {
    GRID_STRIDE(i, n) {
        float gw = has_w ? g[i] * w[i] : g[i];
        dx[i] = gw * (sigmoid_stable(x[i]) - t[i]);
        dt[i] = -gw * x[i];
        if (has_w) dw[i] = g[i] * bce_raw(x[i], t[i]);
    }
}

#define KIND_IOU 0
#define KIND_GIOU 1
#define KIND_CIOU 2
#define KIND_CIOU_TV 3
#define FOUR_OVER_PI2 0.40528473456935108578f

extern "C" __global__ void box_loss_fwd_bwd_f32(const float* __restrict__ pred,
                                                const float* __restrict__ target,
                                                const float* __restrict__ g,
                                                float* __restrict__ loss,
                                                float* __restrict__ dpred, long long n, int kind) {
    GRID_STRIDE(b, n) {
        float px1 = pred[4 * b], py1 = pred[4 * b + 1], px2 = pred[4 * b + 2],
              py2 = pred[4 * b + 3];
        float tx1 = target[4 * b], ty1 = target[4 * b + 1], tx2 = target[4 * b + 2],
              ty2 = target[4 * b + 3];
        // Intersection (clamped at 0), areas, union, enclosing box.
        float iw_raw = fminf(px2, tx2) - fmaxf(px1, tx1);
        float ih_raw = fminf(py2, ty2) - fmaxf(py1, ty1);
        float iw = iw_raw >= 0.0f ? iw_raw : 0.0f;
        float ih = ih_raw >= 0.0f ? ih_raw : 0.0f;
        float inter = iw * ih;
        float pw = px2 - px1, ph = py2 - py1, tw = tx2 - tx1, th = ty2 - ty1;
        float area_p = pw * ph, area_t = tw * th;
        float uni = area_p + area_t - inter;
        float enc_w = fmaxf(px2, tx2) - fminf(px1, tx1);
        float enc_h = fmaxf(py2, ty2) - fminf(py1, ty1);

        // Gradients of the loss with respect to the intermediates.
        float d_inter = 0.0f, d_area_p = 0.0f, d_enc_w = 0.0f, d_enc_h = 0.0f;
        float d_pw = 0.0f, d_ph = 0.0f;            // beyond the area term (CIoU aspect)
        float d_pcx2 = 0.0f, d_pcy2 = 0.0f;        // d/d(px1 + px2), d/d(py1 + py2)
        float l = 0.0f;

        if (kind == KIND_IOU || kind == KIND_GIOU) {
            float u = uni + 1e-16f;
            float iou = inter / u;
            float d_iou;
            if (kind == KIND_IOU) {
                l = 1.0f - iou * iou;
                d_iou = -2.0f * iou;
            } else {
                float area_c = enc_w * enc_h;
                float cc = area_c >= 1e-16f ? area_c : 1e-16f;
                float penalty = (area_c - uni) / cc;
                float giou = iou - penalty;
                float gc = giou < -1.0f ? -1.0f : (giou > 1.0f ? 1.0f : giou);
                l = 1.0f - gc;
                float d_giou = (giou >= -1.0f && giou <= 1.0f) ? -1.0f : 0.0f;
                d_iou = d_giou;
                // penalty = (area_c − uni)/cc
                float d_pen = -d_giou;
                float d_area_c = d_pen * (1.0f / cc) -
                                 (area_c >= 1e-16f ? d_pen * (area_c - uni) / (cc * cc) : 0.0f);
                float d_uni = -d_pen / cc;
                d_area_p += d_uni;
                d_inter -= d_uni;
                d_enc_w += d_area_c * enc_h;
                d_enc_h += d_area_c * enc_w;
            }
            // iou = inter / (area_p + area_t − inter + 1e-16)
            d_inter += d_iou * (1.0f / u + inter / (u * u));
            d_area_p += -d_iou * inter / (u * u);
        } else {
            bool tv = kind == KIND_CIOU_TV;
            float eps = tv ? 1e-7f : 1e-6f;
            float u = uni + eps;
            float iou = inter / u;
            float dxs = (tx1 + tx2) - (px1 + px2), dys = (ty1 + ty2) - (py1 + py2);
            float rho2 = 0.25f * (dxs * dxs + dys * dys);
            float cw = tv ? enc_w : (enc_w >= 0.0f ? enc_w : 0.0f);
            float chh = tv ? enc_h : (enc_h >= 0.0f ? enc_h : 0.0f);
            float c2 = cw * cw + chh * chh + eps;
            float h1 = tv ? ph : ph + eps, h2 = tv ? th : th + eps;
            float r1 = pw / h1, r2 = tw / h2;
            float da = atanf(r2) - atanf(r1);
            float v = FOUR_OVER_PI2 * da * da;
            float d_iou, d_rho2, d_c2, d_v;
            if (tv) {
                float alpha = v / (1.0f - iou + v + eps);
                l = (1.0f - iou + rho2 / c2) + alpha * v;
                d_iou = -1.0f;
                d_rho2 = 1.0f / c2;
                d_c2 = -rho2 / (c2 * c2);
                d_v = alpha;
            } else {
                float alpha = iou > 0.5f ? v / (1.0f - iou + v) : 0.0f;
                float ciou = iou - (rho2 / c2 + alpha * v);
                float cc = ciou < -1.0f ? -1.0f : (ciou > 1.0f ? 1.0f : ciou);
                l = 1.0f - cc;
                float d_ciou = (ciou >= -1.0f && ciou <= 1.0f) ? -1.0f : 0.0f;
                d_iou = d_ciou;
                d_rho2 = -d_ciou / c2;
                d_c2 = d_ciou * rho2 / (c2 * c2);
                d_v = -d_ciou * alpha;
            }
            d_inter += d_iou * (1.0f / u + inter / (u * u));
            d_area_p += -d_iou * inter / (u * u);
            // rho2 = ((t1+t2) − (p1+p2))²/4 per axis.
            d_pcx2 += d_rho2 * (-0.5f * dxs);
            d_pcy2 += d_rho2 * (-0.5f * dys);
            // c2 = cw² + ch² + eps, cw = clamp(enc_w, 0) (mmdet) or enc_w (torchvision).
            if (tv || enc_w >= 0.0f) d_enc_w += d_c2 * 2.0f * cw;
            if (tv || enc_h >= 0.0f) d_enc_h += d_c2 * 2.0f * chh;
            // v = (4/π²)(atan(r2) − atan(r1))², r1 = pw/h1.
            float d_r1 = d_v * FOUR_OVER_PI2 * 2.0f * da * (-1.0f / (1.0f + r1 * r1));
            d_pw += d_r1 / h1;
            d_ph += -d_r1 * pw / (h1 * h1);
        }

        // Back to the four coordinates.
        float gx1 = 0.0f, gy1 = 0.0f, gx2 = 0.0f, gy2 = 0.0f;
        // inter = iw·ih, iw = clamp(min(px2,tx2) − max(px1,tx1), 0, inf).
        float d_iw = d_inter * ih, d_ih = d_inter * iw;
        if (iw_raw >= 0.0f) {
            if (px2 <= tx2) gx2 += d_iw;
            if (px1 >= tx1) gx1 -= d_iw;
        }
        if (ih_raw >= 0.0f) {
            if (py2 <= ty2) gy2 += d_ih;
            if (py1 >= ty1) gy1 -= d_ih;
        }
        // area_p = pw·ph.
        d_pw += d_area_p * ph;
        d_ph += d_area_p * pw;
        gx2 += d_pw;
        gx1 -= d_pw;
        gy2 += d_ph;
        gy1 -= d_ph;
        // enclosing sides: max(px2,tx2) − min(px1,tx1).
        if (px2 >= tx2) gx2 += d_enc_w;
        if (px1 <= tx1) gx1 -= d_enc_w;
        if (py2 >= ty2) gy2 += d_enc_h;
        if (py1 <= ty1) gy1 -= d_enc_h;
        // centre sums.
        gx1 += d_pcx2;
        gx2 += d_pcx2;
        gy1 += d_pcy2;
        gy2 += d_pcy2;

        float gb = g[b];
        loss[b] = l;
        dpred[4 * b] = gb * gx1;
        dpred[4 * b + 1] = gb * gy1;
        dpred[4 * b + 2] = gb * gx2;
        dpred[4 * b + 3] = gb * gy2;
    }
}
