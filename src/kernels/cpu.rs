//! Slice-level CPU kernels behind [`super`]: im2col / col2im over bounded chunks of images plus `gemm` matmuls.
//!
//! All three kernels share one geometry ([`Geom`]): input position `iy = oy·s + ky − p` (likewise for `x`), with
//! zeros outside `[0, h)`. Output sizes are explicit, so the three are exact mutual adjoints for any sizes:
//! - [`conv2d`]: `x [n, c_in, h, w]`, `w [c_out, c_in, kh, kw]` → `[n, c_out, ho, wo]`
//!   (per chunk: im2col `[c_in·kh·kw, ho·b·cw]`, gemm `w · col`, copy the valid columns into the images);
//! - [`conv_transpose2d`]: `nu [n, c_out, ho, wo]`, `w` → `[n, c_in, h, w]`
//!   (per chunk: gather `nu` to `[c_out, ho·b·cw]`, gemm `wᵀ · nu`, col2im);
//! - [`weight_grad`]: `x [n, c_in, h, w]`, `g [n, c_out, ho, wo]` → `[c_out, c_in, kh, kw]`
//!   (per chunk: im2col of `x`, gather `g`, gemm-accumulate `g · colᵀ`; per-thread sums reduced at the end).
//!
//! **Phase planes.** A chunk of `b` images is first split into the `s × s` stride phases of its zero-padded
//! channels, `P[ry][rx][ci][jy][i][jx] = x[i, ci, jy·s + ry − p, jx·s + rx − p]`, planes of
//! `hp × b × wp = (ho + (kh−1)/s) × b × (wo + (kw−1)/s)` with the images interleaved row by row. Kernel tap
//! `(ky, kx)` of channel `ci` then reads plane `[ky % s][kx % s][ci]` from row `ky/s`, column `kx/s` on, and the
//! im2col matrix orders its columns `(oy, i, ox)` to match. When `wp` is close to `wo`, im2col rows are *extended*
//! to `cw = wp` columns per output row, so each tap of each channel of the whole chunk is **one contiguous copy**
//! (col2im: one contiguous add) of `ho·b·wp` elements; the `wp − wo` extra columns cost a little more gemm and are
//! dropped afterwards (in the transpose their inputs are zero). Otherwise (`cw = wo`) output rows are copied one by
//! one. Building the planes costs one pass over the input, through a zero-padded row buffer.
//!
//! Chunks hold as many images as keep one chunk's buffers near [`CHUNK_BYTES`] (about a core's L2); chunks run in
//! parallel on rayon with single-threaded gemms (measured faster than gemm's own threads, which leave the copies
//! serial), except when there are fewer chunks than threads (tiny batches), where the chunks run in turn and gemm
//! parallelises itself. Each thread keeps its scratch buffers between calls. Large outputs ask Linux for
//! transparent huge pages, which saves most first-touch page faults.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::thread::LocalKey;

use gemm::Parallelism;
use rayon::prelude::*;

/// Target size of one chunk's scratch buffers (planes, im2col and the gemm's other operand), in bytes: 1 MB
/// measured best on a 2 MB-L2 core (512 KB as good, 2 MB 5–15% slower, 8 MB 30% slower).
pub(crate) const CHUNK_BYTES: usize = 1 << 20;

/// The element types the kernels run on (those `gemm` supports that the dual network uses).
pub(crate) trait Elem: super::Float + PartialEq + std::ops::AddAssign {
    const ZERO: Self;
    const ONE: Self;
    /// Runs `f` with the calling thread's scratch buffers for this type.
    fn with_scratch<R>(f: impl FnOnce(&mut Scratch<Self>) -> R) -> R;
}

impl Elem for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn with_scratch<R>(f: impl FnOnce(&mut Scratch<Self>) -> R) -> R {
        with_scratch(&SCRATCH_F32, f)
    }
}

impl Elem for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn with_scratch<R>(f: impl FnOnce(&mut Scratch<Self>) -> R) -> R {
        with_scratch(&SCRATCH_F64, f)
    }
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
    pub(crate) fn in_img(&self) -> usize {
        self.c_in * self.h * self.w
    }
    pub(crate) fn out_img(&self) -> usize {
        self.c_out * self.ho * self.wo
    }
    /// Rows of the im2col matrix: `c_in · kh · kw`.
    fn rows(&self) -> usize {
        self.c_in * self.kh * self.kw
    }
    /// Nothing to compute: every output is zero (or there is no output at all).
    pub(crate) fn degenerate(&self) -> bool {
        self.in_img() == 0 || self.out_img() == 0 || self.rows() == 0 || self.s == 0
    }
}

/// The phase-plane layout of one geometry (see the module docs). The planes of a chunk of `b` images interleave
/// the images row by row, `[ry][rx][ci][jy][i][jx]`, so that one kernel tap of one channel of the whole chunk is a
/// single run of memory; the im2col columns are ordered `(oy, i, ox)` to match, `cw` columns per output row.
struct Planes {
    g: Geom,
    /// Phases used along y and x: `min(s, kh)`, `min(s, kw)`.
    py: usize,
    px: usize,
    hp: usize,
    wp: usize,
    /// Columns per output row in the im2col matrix: `wp` (extended) or `wo`.
    cw: usize,
}

impl Planes {
    fn new(g: &Geom) -> Planes {
        let (py, px) = (g.s.min(g.kh), g.s.min(g.kw));
        let (hp, wp) = (g.ho + (g.kh - 1) / g.s, g.wo + (g.kw - 1) / g.s);
        let cw = if extend(g.wo, wp) { wp } else { g.wo };
        Planes { g: *g, py, px, hp, wp, cw }
    }
    /// Elements of one plane of a `b`-image chunk: `hp · b · wp` plus `(kw − 1)/s` of slack for extended copies.
    fn plen(&self, b: usize) -> usize {
        self.hp * b * self.wp + (self.g.kw - 1) / self.g.s
    }
    /// Elements of all planes of a `b`-image chunk.
    fn len(&self, b: usize) -> usize {
        self.py * self.px * self.g.c_in * self.plen(b)
    }
    fn plane(&self, b: usize, ci: usize, ry: usize, rx: usize) -> usize {
        ((ry * self.px + rx) * self.g.c_in + ci) * self.plen(b)
    }
    /// im2col columns of a `b`-image chunk: `ho · b · cw`.
    fn cols(&self, b: usize) -> usize {
        self.g.ho * b * self.cw
    }
    /// Scratch bytes per image of a chunk: planes, im2col columns and the other gemm operand.
    fn bytes_per_img<T>(&self) -> usize {
        let g = &self.g;
        (self.len(1) + (g.rows() + g.c_out) * self.cols(1)) * std::mem::size_of::<T>()
    }

    /// The plane row holding input row `iy`: `(ry, jy)` with `iy + p = jy·s + ry`, if that row is in a plane.
    fn plane_row(&self, iy: usize) -> Option<(usize, usize)> {
        let u = iy + self.g.p;
        let (ry, jy) = (u % self.g.s, u / self.g.s);
        (ry < self.py && jy < self.hp).then_some((ry, jy))
    }

    /// Writes the plane rows of the `b` images `x [b, c_in, h, w]`; rows of no input row (padding) must already be
    /// zero. Each input row goes through `row` (`s·wp` elements, zero where the row has no input: padding), whose
    /// every `s`-th element from `rx` on is plane row `[ry][rx]`.
    fn fill<T: Elem>(&self, x: &[T], b: usize, row: &mut [T], planes: &mut [T]) {
        let g = &self.g;
        let ld = b * self.wp;
        let (p0, n) = (g.p.min(row.len()), g.w.min(row.len().saturating_sub(g.p)));
        for ci in 0..g.c_in {
            for iy in 0..g.h {
                let Some((ry, jy)) = self.plane_row(iy) else { continue };
                for i in 0..b {
                    let src = &x[((i * g.c_in + ci) * g.h + iy) * g.w..][..g.w];
                    row[p0..p0 + n].copy_from_slice(&src[..n]);
                    for rx in 0..self.px {
                        let off = self.plane(b, ci, ry, rx) + jy * ld + i * self.wp;
                        gather_strided(&mut planes[off..off + self.wp], &row[rx..], g.s);
                    }
                }
            }
        }
    }

    /// Reads the `b` images `out [b, c_in, h, w]` back from their planes (rows and columns of no plane are left as
    /// they are); `row` as in [`Planes::fill`], zero on entry.
    fn unfill<T: Elem>(&self, planes: &[T], b: usize, row: &mut [T], out: &mut [T]) {
        let g = &self.g;
        let ld = b * self.wp;
        let (p0, n) = (g.p.min(row.len()), g.w.min(row.len().saturating_sub(g.p)));
        for ci in 0..g.c_in {
            for iy in 0..g.h {
                let Some((ry, jy)) = self.plane_row(iy) else { continue };
                for i in 0..b {
                    for rx in 0..self.px {
                        let off = self.plane(b, ci, ry, rx) + jy * ld + i * self.wp;
                        scatter_strided(&planes[off..off + self.wp], &mut row[rx..], g.s);
                    }
                    let d = &mut out[((i * g.c_in + ci) * g.h + iy) * g.w..][..g.w];
                    d[..n].copy_from_slice(&row[p0..p0 + n]);
                }
            }
        }
    }

    /// im2col of a `b`-image chunk from its planes:
    /// `col[r, (oy·b + i)·cw + ox] = P[ky%s][kx%s][ci][oy + ky/s][i][ox + kx/s]`, `r = (ci·kh + ky)·kw + kx`.
    fn im2col<T: Elem>(&self, planes: &[T], b: usize, col: &mut [T]) {
        let g = &self.g;
        let n = self.cols(b);
        for ci in 0..g.c_in {
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let r = (ci * g.kh + ky) * g.kw + kx;
                    let src = &planes[self.plane(b, ci, ky % g.s, kx % g.s) + (ky / g.s) * b * self.wp + kx / g.s..];
                    let dst = &mut col[r * n..][..n];
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

    /// The adjoint of [`Planes::im2col`]: adds the columns of a chunk into its planes.
    fn col2im<T: Elem>(&self, col: &[T], b: usize, planes: &mut [T]) {
        let g = &self.g;
        let n = self.cols(b);
        for ci in 0..g.c_in {
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let r = (ci * g.kh + ky) * g.kw + kx;
                    let off = self.plane(b, ci, ky % g.s, kx % g.s) + (ky / g.s) * b * self.wp + kx / g.s;
                    let dst = &mut planes[off..];
                    let src = &col[r * n..][..n];
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

    /// `dst[c, (oy·b + i)·cw + ox] = src[i, c, oy, ox]` (zero for `ox ≥ wo`) for the `b` maps of `src`.
    fn gather<T: Elem>(&self, src: &[T], b: usize, dst: &mut [T]) {
        let (g, n, cw) = (&self.g, self.cols(b), self.cw);
        for i in 0..b {
            for c in 0..g.c_out {
                let s = &src[(i * g.c_out + c) * g.ho * g.wo..][..g.ho * g.wo];
                let d = &mut dst[c * n..][..n];
                for (oy, s) in s.chunks_exact(g.wo).enumerate() {
                    let d = &mut d[(oy * b + i) * cw..][..cw];
                    d[..g.wo].copy_from_slice(s);
                    d[g.wo..].fill(T::ZERO);
                }
            }
        }
    }

    /// The inverse of [`Planes::gather`] on the valid columns: `dst[i, c, oy, ox] = src[c, (oy·b + i)·cw + ox]`.
    fn scatter<T: Elem>(&self, src: &[T], b: usize, dst: &mut [MaybeUninit<T>]) {
        let (g, n, cw) = (&self.g, self.cols(b), self.cw);
        for i in 0..b {
            for c in 0..g.c_out {
                let s = &src[c * n..][..n];
                let d = &mut dst[(i * g.c_out + c) * g.ho * g.wo..][..g.ho * g.wo];
                for (oy, d) in d.chunks_exact_mut(g.wo).enumerate() {
                    super::write_slice(d, &s[(oy * b + i) * cw..][..g.wo]);
                }
            }
        }
    }
}

/// `d[j] = src[j·s]`.
fn gather_strided<T: Copy>(d: &mut [T], src: &[T], s: usize) {
    let Some(last) = d.len().checked_sub(1) else { return };
    let src = &src[..last * s + 1];
    match s {
        1 => d.copy_from_slice(src),
        2 => d.iter_mut().enumerate().for_each(|(j, d)| *d = src[2 * j]),
        _ => d.iter_mut().enumerate().for_each(|(j, d)| *d = src[s * j]),
    }
}

/// `d[j·s] = src[j]`.
fn scatter_strided<T: Copy>(src: &[T], d: &mut [T], s: usize) {
    let Some(last) = src.len().checked_sub(1) else { return };
    let d = &mut d[..last * s + 1];
    match s {
        1 => d.copy_from_slice(src),
        2 => src.iter().enumerate().for_each(|(j, v)| d[2 * j] = *v),
        _ => src.iter().enumerate().for_each(|(j, v)| d[s * j] = *v),
    }
}

/// Whether to extend im2col rows from `wo` to `wp` columns (trading up to half again the gemm for contiguous
/// copies: measured faster even at 9 for 7, the 3×3 stride-1 case).
fn extend(wo: usize, wp: usize) -> bool {
    2 * (wp - wo) <= wo
}

/// A matrix operand for `gemm`: data, shape, row stride, column stride; built only from a slice that holds it.
#[derive(Clone, Copy)]
struct Mat<T> {
    ptr: *const T,
    shape: (usize, usize),
    rs: isize,
    cs: isize,
}

impl<T> Mat<T> {
    /// The row-major `[r, c]` matrix at the start of `s`.
    fn rows(s: &[T], r: usize, c: usize) -> Self {
        assert!(s.len() >= r * c, "gemm operand out of bounds");
        Mat { ptr: s.as_ptr(), shape: (r, c), rs: c as isize, cs: 1 }
    }
    /// The `[c, r]` transpose of the row-major `[r, c]` matrix at the start of `s`.
    fn cols(s: &[T], r: usize, c: usize) -> Self {
        assert!(s.len() >= r * c, "gemm operand out of bounds");
        Mat { ptr: s.as_ptr(), shape: (c, r), rs: 1, cs: c as isize }
    }
}

/// `dst[m × n] = [dst +] lhs[m × k] · rhs[k × n]`, `dst` contiguous, row-major or (`col_major`) column-major.
fn matmul<T: Elem>(dst: &mut [T], col_major: bool, lhs: Mat<T>, rhs: Mat<T>, accumulate: bool, par: Parallelism) {
    let ((m, k), (k2, n)) = (lhs.shape, rhs.shape);
    assert!(k == k2 && dst.len() >= m * n, "gemm shapes do not match");
    let (dst_rs, dst_cs) = if col_major { (1, m as isize) } else { (n as isize, 1) };
    // SAFETY: `dst` holds `m × n` elements at these strides; `lhs` and `rhs` were built from slices holding their
    // `m × k` and `k × n` elements at their strides; `T` is f32 or f64, both supported by `gemm`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs,
            dst_rs,
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

/// `dst [m × n] (+)= op(a) · op(b)` for row-major operands, `op(a)` `[m × k]` (`a` is `[k × m]` when
/// `a_t`), `op(b)` `[k × n]` (`b` is `[n × k]` when `b_t`), with gemm's own threads.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_rows<T: Elem>(
    dst: &mut [T],
    (m, n, k): (usize, usize, usize),
    a: &[T],
    a_t: bool,
    b: &[T],
    b_t: bool,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(T::ZERO);
        }
        return;
    }
    let lhs = if a_t { Mat::cols(a, k, m) } else { Mat::rows(a, m, k) };
    let rhs = if b_t { Mat::cols(b, n, k) } else { Mat::rows(b, k, n) };
    let threads = rayon::current_num_threads().max(1);
    let par = if threads > 1 && m * n * k > 1 << 16 { Parallelism::Rayon(threads) } else { Parallelism::None };
    matmul(dst, false, lhs, rhs, accumulate, par);
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
        let mut b = (CHUNK_BYTES / bytes_per_img.max(1)).clamp(1, n.max(1));
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

/// Scratch buffers of one thread, kept between calls (see [`Elem::with_scratch`]). `planes` keeps zeros at the
/// positions `fill` does not write for as long as the layout `planes_key` (geometry, chunk size) stays the same.
pub(crate) struct Scratch<T> {
    planes: Vec<T>,
    planes_key: Option<(Geom, usize, usize)>,
    col: Vec<T>,
    other: Vec<T>,
    row: Vec<T>,
}

impl<T: Elem> Scratch<T> {
    const fn new() -> Self {
        Scratch { planes: Vec::new(), planes_key: None, col: Vec::new(), other: Vec::new(), row: Vec::new() }
    }
    /// Fills the planes of the `b`-image chunk `x` (zeros where `fill` does not write: kept from the last chunk
    /// of the same layout) and builds the im2col matrix of `rows × ld` from them in `col`.
    fn im2col(&mut self, pl: &Planes, x: &[T], b: usize) {
        let key = Some((pl.g, pl.cw, b));
        if self.planes_key != key {
            self.planes.clear();
            self.planes.resize(pl.len(b), T::ZERO);
            self.planes_key = key;
        }
        let r = sized(&mut self.row, pl.g.s * pl.wp);
        r.fill(T::ZERO);
        pl.fill(x, b, r, &mut self.planes[..pl.len(b)]);
        let col = sized(&mut self.col, pl.g.rows() * pl.cols(b));
        pl.im2col(&self.planes, b, col);
    }
    /// col2im of the `rows × ld` matrix in `col` into the `b` images `out` (all zero on entry).
    fn col2im(&mut self, pl: &Planes, b: usize, out: &mut [T]) {
        self.planes_key = None;
        let p = sized(&mut self.planes, pl.len(b));
        p.fill(T::ZERO);
        pl.col2im(&self.col[..pl.g.rows() * pl.cols(b)], b, p);
        let r = sized(&mut self.row, pl.g.s * pl.wp);
        r.fill(T::ZERO);
        pl.unfill(p, b, r, out);
    }
    /// Lets go of buffers grown far past the chunk size (by a batch of a few huge images).
    fn trim(&mut self) {
        let cap = 4 * CHUNK_BYTES / std::mem::size_of::<T>();
        for v in [&mut self.planes, &mut self.col, &mut self.other, &mut self.row] {
            if v.capacity() > cap {
                *v = Vec::new();
            }
        }
        if self.planes.is_empty() {
            self.planes_key = None;
        }
    }
}

thread_local! {
    static SCRATCH_F32: RefCell<Scratch<f32>> = const { RefCell::new(Scratch::new()) };
    static SCRATCH_F64: RefCell<Scratch<f64>> = const { RefCell::new(Scratch::new()) };
}

/// Runs `f` with this thread's scratch (fresh buffers if it is in use further up the stack, as when a rayon
/// thread picks up another kernel call while it waits inside one).
fn with_scratch<T: Elem, R>(key: &'static LocalKey<RefCell<Scratch<T>>>, f: impl FnOnce(&mut Scratch<T>) -> R) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut sc) => {
            let r = f(&mut sc);
            sc.trim();
            r
        }
        Err(_) => f(&mut Scratch::new()),
    })
}

/// A zeroed vector for a kernel's output. On Linux, a large one first asks for transparent huge pages (where the
/// system leaves that to `madvise`), which makes the page faults of its first touch 512× rarer.
pub(crate) fn zeroed<T: Elem>(len: usize) -> Vec<T> {
    let v = vec![T::ZERO; len];
    #[cfg(target_os = "linux")]
    advise_huge_pages(&v);
    v
}

#[cfg(target_os = "linux")]
fn advise_huge_pages<T>(v: &[T]) {
    const HUGE: usize = 2 << 20;
    let (addr, bytes) = (v.as_ptr() as usize, std::mem::size_of_val(v));
    if bytes < 8 * HUGE {
        return;
    }
    let (start, end) = (addr.next_multiple_of(HUGE), (addr + bytes) / HUGE * HUGE);
    if end > start {
        // SAFETY: advice only, about whole pages inside the allocation `v` owns; a failure changes nothing.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
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
    if n == 0 || g.degenerate() {
        return zeroed(n * g.out_img());
    }
    // Every output element is written once by `scatter` below (the chunks cover all images).
    super::output_vec(n * g.out_img(), |out| conv2d_into(x, w, n, g, out))
}

/// [`conv2d`] into `out` (`n · out_img` elements, every one written).
pub(crate) fn conv2d_into<T: Elem>(x: &[T], w: &[T], n: usize, g: &Geom, out: &mut [MaybeUninit<T>]) {
    #[cfg(target_os = "linux")]
    advise_huge_pages(out);
    let (rows, pl) = (g.rows(), Planes::new(g));
    let plan = Plan::new(n, pl.bytes_per_img::<T>());
    let par = plan.gemm_par();
    let run = |xc: &[T], oc: &mut [MaybeUninit<T>], sc: &mut Scratch<T>| {
        let b = xc.len() / g.in_img();
        let ld = pl.cols(b);
        sc.im2col(&pl, xc, b);
        let col = &sc.col[..rows * ld];
        let tmp = sized(&mut sc.other, g.c_out * ld);
        matmul(tmp, false, Mat::rows(w, g.c_out, rows), Mat::rows(col, rows, ld), false, par);
        pl.scatter(tmp, b, oc);
    };
    let (xs, os) = (plan.b * g.in_img(), plan.b * g.out_img());
    if plan.serial {
        x.chunks(xs).zip(out.chunks_mut(os)).for_each(|(xc, oc)| T::with_scratch(|sc| run(xc, oc, sc)));
    } else {
        x.par_chunks(xs).zip(out.par_chunks_mut(os)).for_each(|(xc, oc)| T::with_scratch(|sc| run(xc, oc, sc)));
    }
}

/// `conv_transpose2d` of `n` maps: `nu [n, c_out, ho, wo]`, `w [c_out, c_in, kh, kw]` → `[n, c_in, h, w]`.
pub(crate) fn conv_transpose2d<T: Elem>(nu: &[T], w: &[T], n: usize, g: &Geom) -> Vec<T> {
    let mut out = zeroed(n * g.in_img());
    conv_transpose2d_into(nu, w, n, g, &mut out);
    out
}

/// [`conv_transpose2d`] of `n` maps into `out` (`n · in_img` elements), which must be zeroed: input rows that no
/// kernel tap reaches are left as they are.
pub(crate) fn conv_transpose2d_into<T: Elem>(nu: &[T], w: &[T], n: usize, g: &Geom, out: &mut [T]) {
    if n == 0 || g.degenerate() {
        return;
    }
    let (rows, pl) = (g.rows(), Planes::new(g));
    let plan = Plan::new(n, pl.bytes_per_img::<T>());
    let par = plan.gemm_par();
    let run = |nc: &[T], oc: &mut [T], sc: &mut Scratch<T>| {
        let b = nc.len() / g.out_img();
        let ld = pl.cols(b);
        let np = sized(&mut sc.other, g.c_out * ld);
        pl.gather(nc, b, np);
        let col = sized(&mut sc.col, rows * ld);
        matmul(col, false, Mat::cols(w, g.c_out, rows), Mat::rows(np, g.c_out, ld), false, par);
        sc.col2im(&pl, b, oc);
    };
    let (ns, os) = (plan.b * g.out_img(), plan.b * g.in_img());
    if plan.serial {
        nu.chunks(ns).zip(out.chunks_mut(os)).for_each(|(nc, oc)| T::with_scratch(|sc| run(nc, oc, sc)));
    } else {
        nu.par_chunks(ns).zip(out.par_chunks_mut(os)).for_each(|(nc, oc)| T::with_scratch(|sc| run(nc, oc, sc)));
    }
}

/// The gradient of `conv2d` w.r.t. its kernel: `x [n, c_in, h, w]`, `g [n, c_out, ho, wo]` →
/// `[c_out, c_in, kh, kw]`, `Σ_{i, oy, ox} g[i, co, oy, ox] · x[i, ci, oy·s + ky − p, ox·s + kx − p]`
/// (accumulated column-major, which suits gemm's kernels when `c_out` is a multiple of 8 or 16, then transposed).
pub(crate) fn weight_grad<T: Elem>(x: &[T], gy: &[T], n: usize, g: &Geom) -> Vec<T> {
    let rows = g.rows();
    let len = g.c_out * rows;
    if n == 0 || g.degenerate() {
        return vec![T::ZERO; len];
    }
    let pl = Planes::new(g);
    let plan = Plan::new(n, pl.bytes_per_img::<T>());
    let par = plan.gemm_par();
    let run = |xc: &[T], gc: &[T], acc: &mut [T], sc: &mut Scratch<T>| {
        let b = xc.len() / g.in_img();
        let ld = pl.cols(b);
        sc.im2col(&pl, xc, b);
        let col = &sc.col[..rows * ld];
        let gp = sized(&mut sc.other, g.c_out * ld);
        pl.gather(gc, b, gp);
        matmul(acc, true, Mat::rows(gp, g.c_out, ld), Mat::cols(col, rows, ld), true, par);
    };
    let (xs, gs) = (plan.b * g.in_img(), plan.b * g.out_img());
    if plan.serial {
        let mut acc = vec![T::ZERO; len];
        x.chunks(xs).zip(gy.chunks(gs)).for_each(|(xc, gc)| T::with_scratch(|sc| run(xc, gc, &mut acc, sc)));
        transpose(&acc, rows, g.c_out)
    } else {
        let acc = x
            .par_chunks(xs)
            .zip(gy.par_chunks(gs))
            .fold(
                || vec![T::ZERO; len],
                |mut acc, (xc, gc)| {
                    T::with_scratch(|sc| run(xc, gc, &mut acc, sc));
                    acc
                },
            )
            .reduce(
                || vec![T::ZERO; len],
                |mut a, b| {
                    for (x, y) in a.iter_mut().zip(b) {
                        *x += y;
                    }
                    a
                },
            );
        transpose(&acc, rows, g.c_out)
    }
}

/// The row-major transpose `[c, r]` of the row-major `[r, c]` matrix `a`.
fn transpose<T: Elem>(a: &[T], r: usize, c: usize) -> Vec<T> {
    (0..c).flat_map(|j| (0..r).map(move |i| a[i * c + j])).collect()
}
