//! Times `dualnet::kernels` against candle's built-in conv2d / conv_transpose2d on the dual network's hot shapes.
//!
//! `cargo bench --bench kernels` (release). `KERNELS_BENCH_N` scales case (a)'s batch (default 9800 images;
//! the full dual-network batch is 39200). `KERNELS_BENCH_SKIP_CANDLE=1` times only the new kernels;
//! `KERNELS_BENCH_ONLY=text` runs only the cases whose name contains `text`.

use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor};
use dualnet::kernels;

/// Fastest wall time of `reps` runs of `f`, in ms (after one warm-up run); the minimum rides out other load.
fn time(reps: usize, mut f: impl FnMut() -> Result<Tensor>) -> Result<f64> {
    f()?;
    let mut ts = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        let out = f()?;
        drop(out);
        ts.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ts.sort_by(f64::total_cmp);
    Ok(ts[0])
}

fn report(
    name: &str,
    reps: usize,
    skip_candle: bool,
    ours: impl FnMut() -> Result<Tensor>,
    theirs: impl FnMut() -> Result<Tensor>,
) -> Result<()> {
    if std::env::var("KERNELS_BENCH_ONLY").is_ok_and(|f| !name.contains(&f)) {
        return Ok(());
    }
    let new = time(reps, ours)?;
    if skip_candle {
        println!("{name:<60} candle      -    ms   dualnet {new:9.1} ms");
    } else {
        let old = time(reps.min(3), theirs)?;
        println!("{name:<60} candle {old:9.1} ms   dualnet {new:9.1} ms   speedup {:5.2}x", old / new);
    }
    Ok(())
}

fn main() -> Result<()> {
    let dev = Device::Cpu;
    let n_a: usize = std::env::var("KERNELS_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(9800);
    let skip = std::env::var("KERNELS_BENCH_SKIP_CANDLE").is_ok_and(|v| v == "1");
    println!("rayon threads: {}", rayon::current_num_threads());
    for dt in [DType::F32, DType::F64] {
        let w = Tensor::randn(0f32, 1., (32, 16, 4, 4), &dev)?.to_dtype(dt)?;
        // (a) conv2d [N,16,14,14] -> [N,32,7,7], k4 s2 p1.
        let x = Tensor::randn(0f32, 1., (n_a, 16, 14, 14), &dev)?.to_dtype(dt)?;
        report(
            &format!("(a) conv2d [{n_a},16,14,14] -> [{n_a},32,7,7] {dt:?}"),
            5,
            skip,
            || kernels::conv2d(&x, &w, 2, 1),
            || x.conv2d(&w, 1, 2, 1, 1),
        )?;
        drop(x);
        // (b)/(c) conv_transpose2d [2500,32,7,7] -> [2500,16,14,14], k4 s2 p1.
        let nu = Tensor::randn(0f32, 1., (2500, 32, 7, 7), &dev)?.to_dtype(dt)?;
        report(
            &format!("(b) conv_transpose2d [2500,32,7,7] -> [2500,16,14,14] {dt:?}"),
            10,
            skip,
            || kernels::conv_transpose2d(&nu, &w, 2, 1, 0),
            || nu.conv_transpose2d(&w, 1, 0, 2, 1),
        )?;
        // first layer: conv2d [784,1,28,28] -> [784,16,14,14], k4 s2 p1, and its transpose.
        let w1 = Tensor::randn(0f32, 1., (16, 1, 4, 4), &dev)?.to_dtype(dt)?;
        let x1 = Tensor::randn(0f32, 1., (784, 1, 28, 28), &dev)?.to_dtype(dt)?;
        report(
            &format!("conv2d [784,1,28,28] -> [784,16,14,14] {dt:?}"),
            10,
            skip,
            || kernels::conv2d(&x1, &w1, 2, 1),
            || x1.conv2d(&w1, 1, 2, 1, 1),
        )?;
        let nu1 = Tensor::randn(0f32, 1., (784, 16, 14, 14), &dev)?.to_dtype(dt)?;
        report(
            &format!("conv_transpose2d [784,16,14,14] -> [784,1,28,28] {dt:?}"),
            10,
            skip,
            || kernels::conv_transpose2d(&nu1, &w1, 2, 1, 0),
            || nu1.conv_transpose2d(&w1, 1, 0, 2, 1),
        )?;
        // 3x3 s1 p1, as in deeper models.
        let w3 = Tensor::randn(0f32, 1., (32, 32, 3, 3), &dev)?.to_dtype(dt)?;
        let x3 = Tensor::randn(0f32, 1., (2500, 32, 7, 7), &dev)?.to_dtype(dt)?;
        report(
            &format!("conv2d 3x3 s1 p1 [2500,32,7,7] -> [2500,32,7,7] {dt:?}"),
            10,
            skip,
            || kernels::conv2d(&x3, &w3, 1, 1),
            || x3.conv2d(&w3, 1, 1, 1, 1),
        )?;
        // Kernel gradient through autograd, as in training: conv2d(x, w) with w a Var.
        let wv = candle_core::Var::from_tensor(&w)?;
        let xg = Tensor::randn(0f32, 1., (2500, 16, 14, 14), &dev)?.to_dtype(dt)?;
        let grad = |f: &dyn Fn(&Tensor) -> Result<Tensor>| -> Result<Tensor> {
            let y = f(wv.as_tensor())?;
            let gs = y.sqr()?.sum_all()?.backward()?;
            gs.get(wv.as_tensor()).cloned().ok_or_else(|| candle_core::Error::Msg("no gradient".into()))
        };
        report(
            &format!("grad w of sum(conv2d(x[2500,16,14,14], w)^2) {dt:?}"),
            5,
            skip,
            || grad(&|w| kernels::conv2d(&xg, w, 2, 1)),
            || grad(&|w| xg.conv2d(w, 1, 2, 1, 1)),
        )?;
    }
    Ok(())
}
