//! The shapes of a 2-D convolution, shared by the CPU kernels (`cpu/conv2d`) and the CUDA
//! launchers (`cuda/conv2d`): `x [N, C, H, W], w [K, C/g, kh, kw] -> y [N, K, Ho, Wo]`, symmetric
//! stride and zero padding.

/// Everything a conv kernel needs to know about its shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
    /// A square kernel's geometry from the input's shape `[n, c, h, w]`, the output channels and
    /// `(kernel, stride, padding, groups)`: the short form of tests and parity tables.
    pub fn square(
        [batch, in_channels, in_h, in_w]: [usize; 4],
        out_channels: usize,
        (kernel, stride, padding, groups): (usize, usize, usize, usize),
    ) -> Self {
        Conv2dGeometry {
            batch,
            in_channels,
            in_h,
            in_w,
            out_channels,
            kernel_h: kernel,
            kernel_w: kernel,
            stride,
            padding,
            groups,
        }
    }
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
