//! The hot tensor kernels of the dual network, in one place so a faster implementation can replace candle's
//! built-in one without touching the ops (design.md §6).
//!
//! Shapes: `conv2d(x: [N, C_in, H, W], w: [C_out, C_in, K, K]) -> [N, C_out, H', W']`;
//! `conv_transpose2d(nu: [N, C_out, H', W'], w) -> [N, C_in, H, W]` with `output_padding` restoring `H`.

use candle_core::{Result, Tensor};

pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    x.conv2d(w, padding, stride, 1, 1)
}

pub fn conv_transpose2d(nu: &Tensor, w: &Tensor, stride: usize, padding: usize, output_padding: usize) -> Result<Tensor> {
    nu.conv_transpose2d(w, padding, output_padding, stride, 1)
}
