//! Slice-level CPU kernels behind [`super`]: im2col / col2im over bounded chunks of images plus `gemm` matmuls.
//!
//! All three kernels share one geometry ([`Geom`]): input position `iy = oy·s + ky − p` (likewise for `x`), with
//! zeros outside `[0, h)`. Output sizes are explicit, so the three are exact mutual adjoints for any sizes:
//! - [`conv2d`]: `x [n, c_in, h, w]`, `w [c_out, c_in, kh, kw]` → `[n, c_out, ho, wo]`
//!   (per chunk: im2col `[c_in·kh·kw, b·ho·cw]`, gemm `w · col`, copy the rows into the images);
//! - [`conv_transpose2d`]: `nu [n, c_out, ho, wo]`, `w` → `[n, c_in, h, w]`
//!   (per chunk: gather `nu` to `[c_out, b·ho·cw]`, gemm `wᵀ · nu`, col2im);
//! - [`weight_grad`]: `x [n, c_in, h, w]`, `g [n, c_out, ho, wo]` → `[c_out, c_in, kh, kw]`
//!   (per chunk: im2col of `x`, gather `g`, gemm-accumulate `g · colᵀ`; per-thread sums reduced at the end).
//!
//! **Phase planes.** Each image channel is first split into the `s × s` stride phases of its zero-padded self,
//! `P[ry][rx][jy][jx] = x[jy·s + ry − p, jx·s + rx − p]`, planes of `hp × wp = (ho + (kh−1)/s) × (wo + (kw−1)/s)`.
//! Kernel tap `(ky, kx)` then reads plane `[ky % s][kx % s]` from row `ky/s`, column `kx/s` on: no bounds checks, no
//! strided gathers. When `wp` is close to `wo` the im2col rows are *extended* to `cw = wp` columns per output row,
//! so each tap of each image is one contiguous copy (col2im: one contiguous add) of `ho·wp` elements; the extra
//! `wp − wo` columns cost a little more gemm and are dropped afterwards (their inputs are zero in the transpose).
//! Otherwise (`cw = wo`) each output row is copied on its own.
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
    /// Nothing to compute: every output is zero (or there is no output at all).
    fn degenerate(&self) -> bool {
        self.in_img() == 0 || self.out_img() == 0 || self.rows() == 0 || self.s == 0
    }
}

/// For each phase or tap offset `r < k`, the plane / output positions `lo..hi` whose input `j·s + r − p` lies in
/// `[0, n_in)`.
fn valid_ranges(k: usize, s: usize, p: usize, n_in: usize, n_out: usize) -> Vec<(usize, usize)> {
    (0..k)
        .map(|r| {
            let lo = if p > r { (p - r).div_ceil(s) } else { 0 };
            let hi = if n_in + p > r { (n_in + p - r).div_ceil(s) } else { 0 }.min(n_out);
            (lo.min(hi), hi)
        })
        .collect()
}

/// The phase-plane layout of one geometry (see the module docs).
struct Planes {
    g: Geom,
    /// Phases used along y and x: `min(s, kh)`, `min(s, kw)`.
    py: usize,
    px: usize,
    wp: usize,
    /// Elements of one plane: `hp · wp` plus `(kw − 1)/s` of slack for the extended copies.
    len: usize,
    /// Columns per output row in the im2col matrix: `wp` (extended) or `wo`.
    cw: usize,
    /// Valid plane rows / columns of each phase.
    ry: Vec<(usize, usize)>,
    rx: Vec<(usize, usize)>,
}

impl Planes {
    fn new(g: &Geom) -> Planes {
        let (py, px) = (g.s.min(g.kh), g.s.min(g.kw));
        let (hp, wp) = (g.ho + (g.kh - 1) / g.s, g.wo + (g.kw - 1) / g.s);
        let cw = if extend(g.wo, wp) { wp } else { g.wo };
        Planes {
            g: *g,
            py,
            px,
            wp,
            len: hp * wp + (g.kw - 1) / g.s,
            cw,
            ry: valid_ranges(py, g.s, g.p, g.h, hp),
            rx: valid_ranges(px, g.s, g.p, g.w, wp),
        }
    }
    /// Elements of the planes of one image.
    fn img_len(&self) -> usize {
        self.g.c_in * self.py * self.px * self.len
    }
    /// im2col columns of one image.
    fn cols(&self) -> usize {
        self.g.ho * self.cw
    }
    fn plane(&self, ci: usize, ry: usize, rx: usize) -> usize {
        ((ci * self.py + ry) * self.px + rx) * self.len
    }

    /// Writes the valid positions of image `x [c_in, h, w]`'s planes; the others must already be zero.
    fn fill<T: Elem>(&self, x: &[T], planes: &mut [T]) {
        let g = &self.g;
        for ci in 0..g.c_in {
            let xc = &x[ci * g.h * g.w..][..g.h * g.w];
            for (ry, &(ylo, yhi)) in self.ry.iter().enumerate() {
                for (rx, &(xlo, xhi)) in self.rx.iter().enumerate() {
                    if xhi <= xlo {
                        continue;
                    }
                    let pl = &mut planes[self.plane(ci, ry, rx)..][..self.len];
                    let ix0 = xlo * g.s + rx - g.p;
                    for jy in ylo..yhi {
                        let src = &xc[(jy * g.s + ry - g.p) * g.w..][..g.w];
                        let d = &mut pl[jy * self.wp + xlo..jy * self.wp + xhi];
                        if g.s == 1 {
                            d.copy_from_slice(&src[ix0..ix0 + d.len()]);
                        } else {
                            for (d, v) in d.iter_mut().zip(src[ix0..].iter().step_by(g.s)) {
                                *d = *v;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Reads image `out [c_in, h, w]` back from its planes (positions of no plane are left as they are).
    fn unfill<T: Elem>(&self, planes: &[T], out: &mut [T]) {
        let g = &self.g;
        for ci in 0..g.c_in {
            let oc = &mut out[ci * g.h * g.w..][..g.h * g.w];
            for (ry, &(ylo, yhi)) in self.ry.iter().enumerate() {
                for (rx, &(xlo, xhi)) in self.rx.iter().enumerate() {
                    if xhi <= xlo {
                        continue;
                    }
                    let pl = &planes[self.plane(ci, ry, rx)..][..self.len];
                    let ix0 = xlo * g.s + rx - g.p;
                    for jy in ylo..yhi {
                        let d = &mut oc[(jy * g.s + ry - g.p) * g.w..][..g.w];
                        let src = &pl[jy * self.wp + xlo..jy * self.wp + xhi];
                        if g.s == 1 {
                            d[ix0..ix0 + src.len()].copy_from_slice(src);
                        } else {
                            for (d, v) in d[ix0..].iter_mut().step_by(g.s).zip(src) {
                                *d = *v;
                            }
                        }
                    }
                }
            }
        }
    }

    /// im2col of one image from its planes: `col[r, off + oy·cw + ox] = P[ky%s][kx%s][oy + ky/s][ox + kx/s]`,
    /// `r = (ci·kh + ky)·kw + kx`, rows `ld` apart.
    fn im2col<T: Elem>(&self, planes: &[T], col: &mut [T], ld: usize, off: usize) {
        let g = &self.g;
        let n = self.cols();
        for ci in 0..g.c_in {
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let r = (ci * g.kh + ky) * g.kw + kx;
                    let src = &planes[self.plane(ci, ky % g.s, kx % g.s) + (ky / g.s) * self.wp + kx / g.s..];
                    let dst = &mut col[r * ld + off..][..n];
                    if self.cw == self.wp {
                        dst.copy_from_slice(&src[..n]);
                    } else {
                        for (d, s) in dst.chunks_exact_mut(g.wo).zip(src.chunks(self.wp)) {
                            d.copy_from_slice(&s[..g.wo]);
                        }
                    }
                }
            }
        }
    }

    /// The adjoint of [`Planes::im2col`]: adds the columns of one image into its planes.
    fn col2im<T: Elem>(&self, col: &[T], ld: usize, off: usize, planes: &mut [T]) {
        let g = &self.g;
        let n = self.cols();
        for ci in 0..g.c_in {
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let r = (ci * g.kh + ky) * g.kw + kx;
                    let dst = &mut planes[self.plane(ci, ky % g.s, kx % g.s) + (ky / g.s) * self.wp + kx / g.s..];
                    let src = &col[r * ld + off..][..n];
                    if self.cw == self.wp {
                        for (d, v) in dst[..n].iter_mut().zip(src) {
                            *d += *v;
                        }
                    } else {
                        for (d, s) in dst.chunks_mut(self.wp).zip(src.chunks_exact(g.wo)) {
                            for (d, v) in d.iter_mut().zip(s) {
                                *d += *v;
                            }
                        }
                    }
                }
            }
        }
    }

    /// `dst[c, i·ho·cw + oy·cw + ox] = src[i, c, oy, ox]` (zero for `ox ≥ wo`) for the `b` maps of `src`.
    fn gather<T: Elem>(&self, src: &[T], b: usize, dst: &mut [T]) {
        let (g, n) = (&self.g, self.cols());
        let hw = g.ho * g.wo;
        for i in 0..b {
            for c in 0..g.c_out {
                let s = &src[(i * g.c_out + c) * hw..][..hw];
                let d = &mut dst[c * b * n + i * n..][..n];
                if self.cw == g.wo {
                    d.copy_from_slice(s);
                } else {
                    for (d, s) in d.chunks_exact_mut(self.cw).zip(s.chunks_exact(g.wo)) {
                        d[..g.wo].copy_from_slice(s);
                        d[g.wo..].fill(T::ZERO);
                    }
                }
            }
        }
    }

    /// The inverse of [`Planes::gather`] on the valid columns: `dst[i, c, oy, ox] = src[c, i·ho·cw + oy·cw + ox]`.
    fn scatter<T: Elem>(&self, src: &[T], b: usize, dst: &mut [T]) {
        let (g, n) = (&self.g, self.cols());
        let hw = g.ho * g.wo;
        for i in 0..b {
            for c in 0..g.c_out {
                let s = &src[c * b * n + i * n..][..n];
                let d = &mut dst[(i * g.c_out + c) * hw..][..hw];
                if self.cw == g.wo {
                    d.copy_from_slice(s);
                } else {
                    for (d, s) in d.chunks_exact_mut(g.wo).zip(s.chunks_exact(self.cw)) {
                        d.copy_from_slice(&s[..g.wo]);
                    }
                }
            }
        }
    }
}

/// Whether to extend im2col rows from `wo` to `wp` columns (trading up to a third more gemm for contiguous copies).
fn extend(wo: usize, wp: usize) -> bool {
    match std::env::var("DUALNET_EXTEND").ok().as_deref() { // TUNING
        Some("1") => return true,
        Some("0") => return false,
        _ => {}
    }
    3 * (wp - wo) <= wo
}

/// Row-major view of a matrix for `gemm`: data, row stride, column stride.
#[derive(Clone, Copy)]
struct Mat<T> {
    ptr: *const T,
    rs: isize,
    cs: isize,
}

impl<T> Mat<T> {
    /// The row-major `[_, ld]` matrix in `s`.
    fn rows(s: &[T], ld: usize) -> Self {
        Mat { ptr: s.as_ptr(), rs: ld as isize, cs: 1 }
    }
    /// The transpose of the row-major `[_, ld]` matrix in `s`.
    fn cols(s: &[T], ld: usize) -> Self {
        Mat { ptr: s.as_ptr(), rs: 1, cs: ld as isize }
    }
}

/// `dst[m × n] (row-major, contiguous) = [dst +] lhs[m × k] · rhs[k × n]`; `lhs` and `rhs` come from slices of at
/// least `m · k` and `k · n` elements.
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

/// Scratch buffers of one worker: `planes` (zeroed once, sized for one image), `col` and `other`.
struct Scratch<T> {
    planes: Vec<T>,
    col: Vec<T>,
    other: Vec<T>,
}

impl<T: Elem> Scratch<T> {
    fn new(pl: &Planes) -> Self {
        Scratch { planes: vec![T::ZERO; pl.img_len()], col: Vec::new(), other: Vec::new() }
    }
}

fn sized<T: Elem>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    if v.len() < len {
        v.resize(len, T::ZERO);
    }
    &mut v[..len]
}

/// Bytes of scratch per image of a chunk: im2col columns plus the other gemm operand.
fn bytes_per_img<T>(g: &Geom, pl: &Planes) -> usize {
    (g.rows() + g.c_out) * pl.cols() * std::mem::size_of::<T>()
}

/// `conv2d` of `n` images: `x [n, c_in, h, w]`, `w [c_out, c_in, kh, kw]` → `[n, c_out, ho, wo]`.
pub(crate) fn conv2d<T: Elem>(x: &[T], w: &[T], n: usize, g: &Geom) -> Vec<T> {
    let mut out = vec![T::ZERO; n * g.out_img()];
    if n == 0 || g.degenerate() {
        return out;
    }
    let (rows, pl) = (g.rows(), Planes::new(g));
    let plan = Plan::new(n, bytes_per_img::<T>(g, &pl));
    let par = plan.gemm_par();
    let run = |xc: &[T], oc: &mut [T], sc: &mut Scratch<T>| {
        let b = xc.len() / g.in_img();
        let ld = b * pl.cols();
        let col = sized(&mut sc.col, rows * ld);
        for (i, xi) in xc.chunks_exact(g.in_img()).enumerate() {
            pl.fill(xi, &mut sc.planes);
            pl.im2col(&sc.planes, col, ld, i * pl.cols());
        }
        let tmp = sized(&mut sc.other, g.c_out * ld);
        matmul(tmp, g.c_out, ld, rows, Mat::rows(w, rows), Mat::rows(col, ld), false, par);
        pl.scatter(tmp, b, oc);
    };
    let (xs, os) = (plan.b * g.in_img(), plan.b * g.out_img());
    if plan.serial {
        let mut sc = Scratch::new(&pl);
        x.chunks(xs).zip(out.chunks_mut(os)).for_each(|(xc, oc)| run(xc, oc, &mut sc));
    } else {
        x.par_chunks(xs).zip(out.par_chunks_mut(os)).for_each_init(|| Scratch::new(&pl), |sc, (xc, oc)| run(xc, oc, sc));
    }
    out
}

/// `conv_transpose2d` of `n` maps: `nu [n, c_out, ho, wo]`, `w [c_out, c_in, kh, kw]` → `[n, c_in, h, w]`.
pub(crate) fn conv_transpose2d<T: Elem>(nu: &[T], w: &[T], n: usize, g: &Geom) -> Vec<T> {
    let mut out = vec![T::ZERO; n * g.in_img()];
    if n == 0 || g.degenerate() {
        return out;
    }
    let (rows, pl) = (g.rows(), Planes::new(g));
    let plan = Plan::new(n, bytes_per_img::<T>(g, &pl));
    let par = plan.gemm_par();
    let run = |nc: &[T], oc: &mut [T], sc: &mut Scratch<T>| {
        let b = nc.len() / g.out_img();
        let ld = b * pl.cols();
        let np = sized(&mut sc.other, g.c_out * ld);
        pl.gather(nc, b, np);
        let col = sized(&mut sc.col, rows * ld);
        matmul(col, rows, ld, g.c_out, Mat::cols(w, rows), Mat::rows(np, ld), false, par);
        for (i, oi) in oc.chunks_exact_mut(g.in_img()).enumerate() {
            sc.planes.fill(T::ZERO);
            pl.col2im(col, ld, i * pl.cols(), &mut sc.planes);
            pl.unfill(&sc.planes, oi);
        }
    };
    let (ns, os) = (plan.b * g.out_img(), plan.b * g.in_img());
    if plan.serial {
        let mut sc = Scratch::new(&pl);
        nu.chunks(ns).zip(out.chunks_mut(os)).for_each(|(nc, oc)| run(nc, oc, &mut sc));
    } else {
        nu.par_chunks(ns).zip(out.par_chunks_mut(os)).for_each_init(|| Scratch::new(&pl), |sc, (nc, oc)| run(nc, oc, sc));
    }
    out
}

/// The gradient of `conv2d` w.r.t. its kernel: `x [n, c_in, h, w]`, `g [n, c_out, ho, wo]` →
/// `[c_out, c_in, kh, kw]`, `Σ_{i, oy, ox} g[i, co, oy, ox] · x[i, ci, oy·s + ky − p, ox·s + kx − p]`.
pub(crate) fn weight_grad<T: Elem>(x: &[T], gy: &[T], n: usize, g: &Geom) -> Vec<T> {
    let rows = g.rows();
    let len = g.c_out * rows;
    if n == 0 || g.degenerate() {
        return vec![T::ZERO; len];
    }
    let pl = Planes::new(g);
    let plan = Plan::new(n, bytes_per_img::<T>(g, &pl));
    let par = plan.gemm_par();
    let run = |xc: &[T], gc: &[T], acc: &mut [T], sc: &mut Scratch<T>| {
        let b = xc.len() / g.in_img();
        let ld = b * pl.cols();
        let col = sized(&mut sc.col, rows * ld);
        for (i, xi) in xc.chunks_exact(g.in_img()).enumerate() {
            pl.fill(xi, &mut sc.planes);
            pl.im2col(&sc.planes, col, ld, i * pl.cols());
        }
        let gp = sized(&mut sc.other, g.c_out * ld);
        pl.gather(gc, b, gp);
        matmul(acc, g.c_out, rows, ld, Mat::rows(gp, ld), Mat::cols(col, ld), true, par);
    };
    let (xs, gs) = (plan.b * g.in_img(), plan.b * g.out_img());
    if plan.serial {
        let (mut acc, mut sc) = (vec![T::ZERO; len], Scratch::new(&pl));
        x.chunks(xs).zip(gy.chunks(gs)).for_each(|(xc, gc)| run(xc, gc, &mut acc, &mut sc));
        acc
    } else {
        x.par_chunks(xs)
            .zip(gy.par_chunks(gs))
            .fold(
                || (vec![T::ZERO; len], Scratch::new(&pl)),
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
