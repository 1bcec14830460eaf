#!/usr/bin/env bash
# Build the CUDA binary of dualnet on a machine WITHOUT a system CUDA toolkit (docs/cuda.md).
#
# With a normal CUDA install (nvcc 11.4–13.4 on PATH, CUDA_HOME set) none of this is needed:
#     cargo build --release --features cuda
#
# What this script does, all under $DUALNET_CUDA_ROOT (default .cuda-venv/, git-ignored, about 1.2 GB):
#   1. a Python venv with the CUDA 13.0 compiler, headers and libraries from PyPI: nvidia-cuda-nvcc==13.0.88,
#      nvidia-cuda-runtime==13.0.96 and ~=13.0.0 pins of nvidia-cuda-nvrtc, nvidia-cuda-cccl, nvidia-cuda-crt,
#      nvidia-nvvm (unpinned, nvcc 13.0 drags in 13.5 pieces, and cudarc refuses 13.5), plus nvidia-cublas and
#      nvidia-curand;
#   2. toolkit/: a folder laid out like a CUDA toolkit (bin/, include/, nvvm/, lib/, lib64 -> lib) of links into
#      the venv's nvidia/cu13, with the unversioned lib*.so links the linker wants (cudart, cublas, cublasLt,
#      nvrtc, curand);
#   3. toolkit/lib/libcuda.so: a stub with soname libcuda.so.1, generated from the cu* functions that cudarc
#      declares, only for the linker (the real library comes from the NVIDIA driver at run time); each stub
#      returns CUDA_ERROR_NO_DEVICE (100), so a binary that picks it up by mistake reports "no device";
#   4. cargo build --release --features cuda into target-cuda/ (CUDA_HOME=toolkit, CUDA_COMPUTE_CAP=90 for
#      H100/H200 — override by exporting CUDA_COMPUTE_CAP — NVCC_CCBIN=g++), about 13 minutes on 2 cores the
#      first time (candle's kernels compile one at a time), seconds to a minute after a source change;
#   5. strips the binary and compresses it: dist/dualnet-cuda.xz (well under the 64 MiB a GPU machine is
#      carried), next to the uncompressed dist/dualnet-cuda.
#
# Run time: the binary is dynamically linked against
#     libcuda.so.1                      the NVIDIA driver's (never from pip; the stub above is link-time only)
#     libcublas.so.13, libcublasLt.so.13  PyPI nvidia-cublas
#     libcurand.so.10                   PyPI nvidia-curand
#     libcudart.so.13                   PyPI nvidia-cuda-runtime (only if the build links it; `readelf -d`
#                                       prints what this build needs, and this script prints it at the end)
#     libnvrtc.so.13                    PyPI nvidia-cuda-nvrtc (likewise)
# On a machine where these packages are installed (the GPU machines' python3 has them, from PyTorch), put their
# lib folders on LD_LIBRARY_PATH, e.g.
#     for p in nvidia-cublas nvidia-curand nvidia-cuda-runtime nvidia-cuda-nvrtc; do
#         python3 -m pip show -f "$p" | awk '/^Location:/{print $2}'; done     # then <Location>/nvidia/cu13/lib
# scripts/device-check.sh does exactly this. Elsewhere use this venv's toolkit/lib (without the stub libcuda).
#
# Usage: scripts/build-cuda.sh            (nice it on a shared machine: nice -n 19 scripts/build-cuda.sh)
# Env:   DUALNET_CUDA_ROOT (venv + toolkit), CARGO_TARGET_DIR (default target-cuda), CUDA_COMPUTE_CAP (default 90),
#        PYTHON (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
ROOT=${DUALNET_CUDA_ROOT:-$REPO/.cuda-venv}
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target-cuda}
PY=${PYTHON:-python3}
say() { printf '== %s\n' "$*" >&2; }

say "1/5 Python venv with the CUDA 13.0 toolchain in $ROOT"
[ -x "$ROOT/bin/python" ] || "$PY" -m venv "$ROOT"
"$ROOT/bin/python" -m pip install -q --disable-pip-version-check \
    nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 \
    'nvidia-cuda-nvrtc~=13.0.0' 'nvidia-cuda-cccl~=13.0.0' 'nvidia-cuda-crt~=13.0.0' 'nvidia-nvvm~=13.0.0' \
    nvidia-cublas nvidia-curand
SITE=$("$ROOT/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
CU=$SITE/nvidia/cu13
for f in bin/nvcc include/cuda_runtime.h nvvm/libdevice lib/libcudart.so.13 lib/libcublas.so.13 lib/libcurand.so.10; do
    [ -e "$CU/$f" ] || { echo "build-cuda: $CU/$f is missing; the PyPI packages changed their layout" >&2; exit 2; }
done

say "2/5 toolkit-shaped folder $ROOT/toolkit"
TK=$ROOT/toolkit
rm -rf "$TK"
mkdir -p "$TK/lib"
for d in bin include nvvm; do ln -s "$CU/$d" "$TK/$d"; done
ln -s lib "$TK/lib64"
for f in "$CU"/lib/*; do ln -s "$f" "$TK/lib/$(basename "$f")"; done
for l in cudart cublas cublasLt nvrtc curand; do
    so=$(cd "$CU/lib" && ls "lib$l.so."* | grep -v -e builtins -e '\.alt\.' | head -n1)
    [ -n "$so" ] || { echo "build-cuda: no lib$l.so.* in $CU/lib" >&2; exit 2; }
    ln -sf "$so" "$TK/lib/lib$l.so"
done

say "3/5 stub libcuda.so (soname libcuda.so.1) from the cu* functions cudarc declares"
CUDARC=$(cargo metadata --format-version 1 --features cuda --manifest-path "$REPO/Cargo.toml" |
    "$ROOT/bin/python" -c 'import json,sys,os
m=json.load(sys.stdin)
print(next(os.path.dirname(p["manifest_path"]) for p in m["packages"] if p["name"]=="cudarc"))')
STUB_DIR=$ROOT/stub
mkdir -p "$STUB_DIR"
grep -rhoE '\bfn cu[A-Za-z0-9_]+\(' "$CUDARC/src/driver/sys" | sed -E 's/^fn (cu[A-Za-z0-9_]+)\($/\1/' | sort -u |
    awk '{print "int " $1 "(void) { return 100; }"}' >"$STUB_DIR/libcuda_stub.c"
echo "   $(wc -l <"$STUB_DIR/libcuda_stub.c") functions from $CUDARC"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$TK/lib/libcuda.so" "$STUB_DIR/libcuda_stub.c"

say "4/5 cargo build --release --features cuda (target dir $TARGET_DIR)"
export CUDA_HOME=$TK CUDA_PATH=$TK CUDA_ROOT=$TK
export PATH=$TK/bin:$PATH
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export NVCC_CCBIN=${NVCC_CCBIN:-g++}
export LIBRARY_PATH=$TK/lib${LIBRARY_PATH:+:$LIBRARY_PATH}
nvcc --version | tail -n 2
cargo build --release --features cuda --target-dir "$TARGET_DIR" --bin dualnet

say "5/5 strip and compress"
mkdir -p "$REPO/dist"
cp "$TARGET_DIR/release/dualnet" "$REPO/dist/dualnet-cuda"
strip "$REPO/dist/dualnet-cuda"
xz -T0 -9 -c "$REPO/dist/dualnet-cuda" >"$REPO/dist/dualnet-cuda.xz.tmp"
mv "$REPO/dist/dualnet-cuda.xz.tmp" "$REPO/dist/dualnet-cuda.xz"
echo "   $(du -h "$REPO/dist/dualnet-cuda" | cut -f1) stripped, $(du -h "$REPO/dist/dualnet-cuda.xz" | cut -f1) compressed"
echo "   libraries it needs at run time:"
readelf -d "$REPO/dist/dualnet-cuda" | awk '/NEEDED/{print "     " $NF}'
say "done: dist/dualnet-cuda.xz (run it with scripts/device-check.sh, or: xz -dc dist/dualnet-cuda.xz > dualnet)"
