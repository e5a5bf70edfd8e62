//! conv2d on the CPU: `x [N,C,H,W], w [K,C/g,kh,kw] -> y [N,K,Ho,Wo]`, f32, symmetric stride and
//! zero padding, groups (depthwise when groups = C = K). No bias: `ops::conv2d` adds it.
//!
//! (in progress: plain reference loops; the fast im2col + gemm path replaces them.)

/// Everything a conv kernel needs to know about its shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dGeometry {
    pub batch: usize,
    pub in_channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_channels: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
}

impl Conv2dGeometry {
    pub fn out_h(&self) -> usize {
        (self.in_h + 2 * self.padding - self.kernel_h) / self.stride + 1
    }
    pub fn out_w(&self) -> usize {
        (self.in_w + 2 * self.padding - self.kernel_w) / self.stride + 1
    }
    pub fn x_len(&self) -> usize {
        self.batch * self.in_channels * self.in_h * self.in_w
    }
    pub fn w_len(&self) -> usize {
        self.out_channels * (self.in_channels / self.groups) * self.kernel_h * self.kernel_w
    }
    pub fn y_len(&self) -> usize {
        self.batch * self.out_channels * self.out_h() * self.out_w()
    }
    /// Multiply-accumulates of one forward pass.
    pub fn macs(&self) -> usize {
        self.y_len() * (self.in_channels / self.groups) * self.kernel_h * self.kernel_w
    }
}

/// Forward: `y = conv(x, w)`.
pub fn fwd(x: &[f32], w: &[f32], g: &Conv2dGeometry) -> Vec<f32> {
    reference::fwd(x, w, g)
}

/// Gradient with respect to the input: `dx = conv_transpose(dy, w)`.
pub fn bwd_input(dy: &[f32], w: &[f32], g: &Conv2dGeometry) -> Vec<f32> {
    reference::bwd_input(dy, w, g)
}

/// Gradient with respect to the weight, summed over the batch.
pub fn bwd_weight(dy: &[f32], x: &[f32], g: &Conv2dGeometry) -> Vec<f32> {
    reference::bwd_weight(dy, x, g)
}

/// Plain loops: the definition the fast paths are tested against.
pub mod reference {
    use super::Conv2dGeometry;

    fn for_each_tap(g: &Conv2dGeometry, mut f: impl FnMut(usize, usize, usize)) {
        // f(x_index, w_index, y_index) for every multiply-accumulate of the convolution.
        let (ho, wo) = (g.out_h(), g.out_w());
        let cin_g = g.in_channels / g.groups;
        let cout_g = g.out_channels / g.groups;
        for n in 0..g.batch {
            for k in 0..g.out_channels {
                let grp = k / cout_g;
                for oy in 0..ho {
                    for ox in 0..wo {
                        let y_i = ((n * g.out_channels + k) * ho + oy) * wo + ox;
                        for c in 0..cin_g {
                            let ci = grp * cin_g + c;
                            for ky in 0..g.kernel_h {
                                let iy = (oy * g.stride + ky) as isize - g.padding as isize;
                                if iy < 0 || iy >= g.in_h as isize {
                                    continue;
                                }
                                for kx in 0..g.kernel_w {
                                    let ix = (ox * g.stride + kx) as isize - g.padding as isize;
                                    if ix < 0 || ix >= g.in_w as isize {
                                        continue;
                                    }
                                    let x_i = ((n * g.in_channels + ci) * g.in_h + iy as usize) * g.in_w + ix as usize;
                                    let w_i = ((k * cin_g + c) * g.kernel_h + ky) * g.kernel_w + kx;
                                    f(x_i, w_i, y_i);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    pub fn fwd(x: &[f32], w: &[f32], g: &Conv2dGeometry) -> Vec<f32> {
        let mut y = vec![0f32; g.y_len()];
        for_each_tap(g, |xi, wi, yi| y[yi] += x[xi] * w[wi]);
        y
    }

    pub fn bwd_input(dy: &[f32], w: &[f32], g: &Conv2dGeometry) -> Vec<f32> {
        let mut dx = vec![0f32; g.x_len()];
        for_each_tap(g, |xi, wi, yi| dx[xi] += dy[yi] * w[wi]);
        dx
    }

    pub fn bwd_weight(dy: &[f32], x: &[f32], g: &Conv2dGeometry) -> Vec<f32> {
        let mut dw = vec![0f32; g.w_len()];
        for_each_tap(g, |xi, wi, yi| dw[wi] += dy[yi] * x[xi]);
        dw
    }
}
