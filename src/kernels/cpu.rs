//! Slice-level CPU kernels behind [`super`]: im2col / col2im over bounded chunks of images plus `gemm` matmuls.
//!
//! All three kernels share one geometry ([`Geom`]): input position `iy = oy·s + ky − p` (likewise for `x`), with
//! zeros outside `[0, h)`. Output sizes are explicit, so the three are exact mutual adjoints for any sizes:
//! - [`conv2d`]: `x [n, c_in, h, w]`, `w [c_out, c_in, kh, kw]` → `[n, c_out, ho, wo]`
//!   (per chunk: im2col `[c_in·kh·kw, b·ho·wo]`, gemm `w · col`, scatter rows into the images);
//! - [`conv_transpose2d`]: `nu [n, c_out, ho, wo]`, `w` → `[n, c_in, h, w]`
//!   (per chunk: gather `nu` to `[c_out, b·ho·wo]`, gemm `wᵀ · nu`, col2im scatter-add);
//! - [`weight_grad`]: `x [n, c_in, h, w]`, `g [n, c_out, ho, wo]` → `[c_out, c_in, kh, kw]`
//!   (per chunk: im2col of `x`, gather `g`, gemm-accumulate `g · colᵀ`; per-thread sums reduced at the end).
//!
//! Chunks hold as many images as keep one chunk's buffers near [`CHUNK_BYTES`]; chunks run in parallel on rayon
//! with single-threaded gemms, except when there are fewer chunks than threads (tiny batches), where the chunks
//! run in turn and gemm parallelises itself.

use gemm::Parallelism;
use rayon::prelude::*;

/// Target size of one chunk's scratch buffers (im2col plus the gemm's other operand), in bytes.
pub(crate) const CHUNK_BYTES: usize = 2 << 20;

/// The element types the kernels run on (those `gemm` supports that the dual network uses).
pub(crate) trait Elem: Copy + Send + Sync + 'static + std::ops::AddAssign {
    const ZERO: Self;
    const ONE: Self;
}

impl Elem for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}

impl Elem for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}

/// The sizes of one convolution: image side `c_in × h × w`, kernel `kh × kw`, map side `c_out × ho × wo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geom {
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub ho: usize,
    pub wo: usize,
    pub kh: usize,
    pub kw: usize,
    pub s: usize,
    pub p: usize,
}

impl Geom {
    fn in_img(&self) -> usize {
        self.c_in * self.h * self.w
    }
    fn out_img(&self) -> usize {
        self.c_out * self.ho * self.wo
    }
    /// Rows of the im2col matrix: `c_in · kh · kw`.
    fn rows(&self) -> usize {
        self.c_in * self.kh * self.kw
    }
    fn hw_out(&self) -> usize {
        self.ho * self.wo
    }
    /// Nothing to compute: every output is zero (or there is no output at all).
    fn degenerate(&self) -> bool {
        self.in_img() == 0 || self.out_img() == 0 || self.rows() == 0
    }
}

/// For each kernel offset `kk`, the output positions `lo..hi` whose input `o·s + kk − p` lies in `[0, n_in)`.
fn valid_ranges(k: usize, s: usize, p: usize, n_in: usize, n_out: usize) -> Vec<(usize, usize)> {
    (0..k)
        .map(|kk| {
            let lo = if p > kk { (p - kk).div_ceil(s) } else { 0 };
            let hi = if n_in + p > kk { (n_in + p - kk).div_ceil(s) } else { 0 }.min(n_out);
            (lo.min(hi), hi)
        })
        .collect()
}

/// Precomputed per-kernel-offset ranges of one geometry.
struct Ranges {
    y: Vec<(usize, usize)>,
    x: Vec<(usize, usize)>,
}

impl Ranges {
    fn new(g: &Geom) -> Self {
        Ranges { y: valid_ranges(g.kh, g.s, g.p, g.h, g.ho), x: valid_ranges(g.kw, g.s, g.p, g.w, g.wo) }
    }
}

/// `col[r, i·ho·wo + oy·wo + ox] = x[i, ci, oy·s + ky − p, ox·s + kx − p]` (zero outside), `r = (ci·kh + ky)·kw + kx`,
/// for the `b` images of `x`; `col` has `rows × b·ho·wo` elements.
fn im2col<T: Elem>(x: &[T], b: usize, g: &Geom, rg: &Ranges, col: &mut [T]) {
    let (hw_in, hw, ld) = (g.h * g.w, g.hw_out(), b * g.hw_out());
    for i in 0..b {
        for ci in 0..g.c_in {
            let xc = &x[(i * g.c_in + ci) * hw_in..][..hw_in];
            for ky in 0..g.kh {
                let (ylo, yhi) = rg.y[ky];
                for kx in 0..g.kw {
                    let (xlo, xhi) = rg.x[kx];
                    let r = (ci * g.kh + ky) * g.kw + kx;
                    let dst = &mut col[r * ld + i * hw..][..hw];
                    dst[..ylo * g.wo].fill(T::ZERO);
                    dst[yhi * g.wo..].fill(T::ZERO);
                    for oy in ylo..yhi {
                        let iy = oy * g.s + ky - g.p;
                        let src = &xc[iy * g.w..][..g.w];
                        let d = &mut dst[oy * g.wo..][..g.wo];
                        d[..xlo].fill(T::ZERO);
                        d[xhi..].fill(T::ZERO);
                        if xhi > xlo {
                            let ix0 = xlo * g.s + kx - g.p;
                            let d = &mut d[xlo..xhi];
                            if g.s == 1 {
                                d.copy_from_slice(&src[ix0..ix0 + d.len()]);
                            } else {
                                for (j, v) in d.iter_mut().enumerate() {
                                    *v = src[ix0 + j * g.s];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: `out[i, ci, oy·s + ky − p, ox·s + kx − p] += col[r, i·ho·wo + oy·wo + ox]`.
fn col2im<T: Elem>(col: &[T], b: usize, g: &Geom, rg: &Ranges, out: &mut [T]) {
    let (hw_in, hw, ld) = (g.h * g.w, g.hw_out(), b * g.hw_out());
    for i in 0..b {
        for ci in 0..g.c_in {
            let oc = &mut out[(i * g.c_in + ci) * hw_in..][..hw_in];
            for ky in 0..g.kh {
                let (ylo, yhi) = rg.y[ky];
                for kx in 0..g.kw {
                    let (xlo, xhi) = rg.x[kx];
                    if xhi <= xlo {
                        continue;
                    }
                    let r = (ci * g.kh + ky) * g.kw + kx;
                    let src = &col[r * ld + i * hw..][..hw];
                    let ix0 = xlo * g.s + kx - g.p;
                    for oy in ylo..yhi {
                        let iy = oy * g.s + ky - g.p;
                        let d = &mut oc[iy * g.w..][..g.w];
                        let sv = &src[oy * g.wo + xlo..oy * g.wo + xhi];
                        if g.s == 1 {
                            for (o, &v) in d[ix0..ix0 + sv.len()].iter_mut().zip(sv) {
                                *o += v;
                            }
                        } else {
                            for (j, &v) in sv.iter().enumerate() {
                                d[ix0 + j * g.s] += v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `dst[c, i·hw + q] = src[i, c, q]` for the `b` images of `src` (`[b, c, hw]` → `[c, b·hw]`).
fn gather<T: Elem>(src: &[T], b: usize, c: usize, hw: usize, dst: &mut [T]) {
    for i in 0..b {
        for ch in 0..c {
            dst[ch * b * hw + i * hw..][..hw].copy_from_slice(&src[(i * c + ch) * hw..][..hw]);
        }
    }
}

/// The inverse of [`gather`]: `dst[i, c, q] = src[c, i·hw + q]`.
fn scatter<T: Elem>(src: &[T], b: usize, c: usize, hw: usize, dst: &mut [T]) {
    for i in 0..b {
        for ch in 0..c {
            dst[(i * c + ch) * hw..][..hw].copy_from_slice(&src[ch * b * hw + i * hw..][..hw]);
        }
    }
}

/// Row-major view of a matrix for `gemm`: data, row stride, column stride.
#[derive(Clone, Copy)]
struct Mat<T> {
    ptr: *const T,
    rs: isize,
    cs: isize,
}

impl<T> Mat<T> {
    fn rows(s: &[T], ld: usize) -> Self {
        Mat { ptr: s.as_ptr(), rs: ld as isize, cs: 1 }
    }
    /// The transpose of the row-major `[_, ld]` matrix in `s`.
    fn cols(s: &[T], ld: usize) -> Self {
        Mat { ptr: s.as_ptr(), rs: 1, cs: ld as isize }
    }
}

/// `dst[m × n] (row-major, contiguous) = [dst +] lhs[m × k] · rhs[k × n]`.
fn matmul<T: Elem>(dst: &mut [T], m: usize, n: usize, k: usize, lhs: Mat<T>, rhs: Mat<T>, accumulate: bool, par: Parallelism) {
    assert!(dst.len() >= m * n, "gemm destination too small");
    // SAFETY: `dst` holds `m × n` elements laid out row-major; callers build `lhs`/`rhs` from slices holding
    // `m × k` and `k × n` elements at the given strides; `T` is f32 or f64, both supported by `gemm`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.ptr,
            lhs.cs,
            lhs.rs,
            rhs.ptr,
            rhs.cs,
            rhs.rs,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            par,
        )
    }
}

/// How a batch of `n` images is cut into chunks and run.
struct Plan {
    /// Images per chunk.
    b: usize,
    /// Run chunks in turn with a multi-threaded gemm (few chunks) instead of chunks in parallel.
    serial: bool,
    threads: usize,
}

impl Plan {
    fn new(n: usize, bytes_per_img: usize) -> Plan {
        let threads = rayon::current_num_threads().max(1);
        let cb = std::env::var("DUALNET_CHUNK").ok().and_then(|v| v.parse().ok()).unwrap_or(CHUNK_BYTES); // TUNING
        let mut b = (cb / bytes_per_img.max(1)).clamp(1, n.max(1));
        if n.div_ceil(b) < threads {
            b = n.div_ceil(threads).max(1);
        }
        Plan { b, serial: n.div_ceil(b) < threads || threads == 1, threads }
    }
    fn gemm_par(&self) -> Parallelism {
        if self.serial && self.threads > 1 {
            Parallelism::Rayon(self.threads)
        } else {
            Parallelism::None
        }
    }
}

/// Scratch buffers of one worker, grown on demand.
struct Scratch<T> {
    a: Vec<T>,
    b: Vec<T>,
}

impl<T> Default for Scratch<T> {
    fn default() -> Self {
        Scratch { a: Vec::new(), b: Vec::new() }
    }
}

fn sized<T: Elem>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    if v.len() < len {
        v.resize(len, T::ZERO);
    }
    &mut v[..len]
}

/// `conv2d` of `n` images: `x [n, c_in, h, w]`, `w [c_out, c_in, kh, kw]` → `[n, c_out, ho, wo]`.
pub(crate) fn conv2d<T: Elem>(x: &[T], w: &[T], n: usize, g: &Geom) -> Vec<T> {
    let mut out = vec![T::ZERO; n * g.out_img()];
    if n == 0 || g.degenerate() {
        return out;
    }
    let (rows, hw, rg) = (g.rows(), g.hw_out(), Ranges::new(g));
    let plan = Plan::new(n, (rows + g.c_out) * hw * std::mem::size_of::<T>());
    let par = plan.gemm_par();
    let run = |xc: &[T], oc: &mut [T], sc: &mut Scratch<T>| {
        let b = xc.len() / g.in_img();
        let col = sized(&mut sc.a, rows * b * hw);
        im2col(xc, b, g, &rg, col);
        if std::env::var("DUALNET_PERIMG").is_ok() { // TUNING
            for i in 0..b {
                let o = &mut oc[i * g.out_img()..][..g.out_img()];
                matmul(o, g.c_out, hw, rows, Mat::rows(w, rows), Mat::rows(&col[i * hw..], b * hw), false, par);
            }
            return;
        }
        let tmp = sized(&mut sc.b, g.c_out * b * hw);
        matmul(tmp, g.c_out, b * hw, rows, Mat::rows(w, rows), Mat::rows(col, b * hw), false, par);
        scatter(tmp, b, g.c_out, hw, oc);
    };
    let (xs, os) = (plan.b * g.in_img(), plan.b * g.out_img());
    if plan.serial {
        let mut sc = Scratch::default();
        x.chunks(xs).zip(out.chunks_mut(os)).for_each(|(xc, oc)| run(xc, oc, &mut sc));
    } else {
        x.par_chunks(xs).zip(out.par_chunks_mut(os)).for_each_init(Scratch::default, |sc, (xc, oc)| run(xc, oc, sc));
    }
    out
}

/// `conv_transpose2d` of `n` maps: `nu [n, c_out, ho, wo]`, `w [c_out, c_in, kh, kw]` → `[n, c_in, h, w]`.
pub(crate) fn conv_transpose2d<T: Elem>(nu: &[T], w: &[T], n: usize, g: &Geom) -> Vec<T> {
    let mut out = vec![T::ZERO; n * g.in_img()];
    if n == 0 || g.degenerate() {
        return out;
    }
    let (rows, hw, rg) = (g.rows(), g.hw_out(), Ranges::new(g));
    let plan = Plan::new(n, (rows + g.c_out) * hw * std::mem::size_of::<T>());
    let par = plan.gemm_par();
    let run = |nc: &[T], oc: &mut [T], sc: &mut Scratch<T>| {
        let b = nc.len() / g.out_img();
        let np = sized(&mut sc.b, g.c_out * b * hw);
        gather(nc, b, g.c_out, hw, np);
        let col = sized(&mut sc.a, rows * b * hw);
        matmul(col, rows, b * hw, g.c_out, Mat::cols(w, rows), Mat::rows(np, b * hw), false, par);
        col2im(col, b, g, &rg, oc);
    };
    let (ns, os) = (plan.b * g.out_img(), plan.b * g.in_img());
    if plan.serial {
        let mut sc = Scratch::default();
        nu.chunks(ns).zip(out.chunks_mut(os)).for_each(|(nc, oc)| run(nc, oc, &mut sc));
    } else {
        nu.par_chunks(ns).zip(out.par_chunks_mut(os)).for_each_init(Scratch::default, |sc, (nc, oc)| run(nc, oc, sc));
    }
    out
}

/// The gradient of `conv2d` w.r.t. its kernel: `x [n, c_in, h, w]`, `g [n, c_out, ho, wo]` →
/// `[c_out, c_in, kh, kw]`, `Σ_{i, oy, ox} g[i, co, oy, ox] · x[i, ci, oy·s + ky − p, ox·s + kx − p]`.
pub(crate) fn weight_grad<T: Elem>(x: &[T], gy: &[T], n: usize, g: &Geom) -> Vec<T> {
    let (rows, hw) = (g.rows(), g.hw_out());
    let len = g.c_out * rows;
    if n == 0 || g.degenerate() {
        return vec![T::ZERO; len];
    }
    let rg = Ranges::new(g);
    let plan = Plan::new(n, (rows + g.c_out) * hw * std::mem::size_of::<T>());
    let par = plan.gemm_par();
    let run = |xc: &[T], gc: &[T], acc: &mut [T], sc: &mut Scratch<T>| {
        let b = xc.len() / g.in_img();
        let col = sized(&mut sc.a, rows * b * hw);
        im2col(xc, b, g, &rg, col);
        let gp = sized(&mut sc.b, g.c_out * b * hw);
        gather(gc, b, g.c_out, hw, gp);
        matmul(acc, g.c_out, rows, b * hw, Mat::rows(gp, b * hw), Mat::cols(col, b * hw), true, par);
    };
    let (xs, gs) = (plan.b * g.in_img(), plan.b * g.out_img());
    if plan.serial {
        let (mut acc, mut sc) = (vec![T::ZERO; len], Scratch::default());
        x.chunks(xs).zip(gy.chunks(gs)).for_each(|(xc, gc)| run(xc, gc, &mut acc, &mut sc));
        acc
    } else {
        x.par_chunks(xs)
            .zip(gy.par_chunks(gs))
            .fold(
                || (vec![T::ZERO; len], Scratch::default()),
                |(mut acc, mut sc), (xc, gc)| {
                    run(xc, gc, &mut acc, &mut sc);
                    (acc, sc)
                },
            )
            .map(|(acc, _)| acc)
            .reduce(
                || vec![T::ZERO; len],
                |mut a, b| {
                    for (x, y) in a.iter_mut().zip(b) {
                        *x += y;
                    }
                    a
                },
            )
    }
}
