#!/usr/bin/env bash
# The GPU check of issue 6, in one command on a machine with an NVIDIA GPU and no Rust toolchain.
#
#   1. CPU and CUDA bounds agree: `dualnet bounds` on --device cpu and --device cuda for every case and setting of
#      the reference vectors, every array compared with abs(a - ref) <= 1e-5 * max(1, max|ref|) (f32): CUDA
#      against CPU (all arrays: clean logits, margins, every layer's bounds, robust CE) and, where the reference's
#      expected values are at hand, CUDA against them too;
#   2. training speed: mnist_small, robust loss with 50 projections, box, eps 0.1, batch 50: 40 steps
#      (`--limit 2000`), then one full epoch of the 60,000 MNIST training images (paper: 74 s per epoch on a GTX
#      1080 Ti; target on an H100: <= 10 s);
#   3. certification speed: exact certification of the 10,000 MNIST test images, eps 0.1 with the box, the
#      reference's trained mnist_small weights, batch 50 (and batch 200 at the end);
#   and the highest GPU memory in use during 2 and 3 (nvidia-smi, sampled).
# Results go to $OUT (default ./device-check-out): summary.txt (for people), results.json, log.txt,
# train60k-metrics.jsonl. Each step has its own timeout, cut to what is left of DEADLINE (default 500 s), so a
# slow step still leaves the others' results and the whole check ends within about 8.5 minutes.
#
# Files it needs, relative to the repository root:
#   - the CUDA binary: dist/dualnet-cuda.xz or dist/dualnet-cuda (scripts/build-cuda.sh), or .device/dualnet-cuda.xz;
#   - the optional larger data: $DUALNET_SHARED (default ../shared; reference/ and data/mnist/) if it is there,
#     else .device/shared.
# `scripts/device-check.sh --pack` (run here, after scripts/build-cuda.sh) fills .device/ (git-ignored, about
# 20 MB) with the compressed binary and the data the check reads, so that only .device needs carrying. With this
# workplace's device tool: run command `scripts/device-check.sh`, carry [".device"], timeout_s 580 (DEADLINE is
# 500 s of steps; the machine's start is extra).
#
# Dry run without a GPU (to test the script itself): DUALNET_BIN=target/release/dualnet DEVICE=cpu QUICK=1
# scripts/device-check.sh (QUICK shrinks the data: 500 training and 200 test images).
#
# Run-time libraries: the binary needs libcuda.so.1 (the NVIDIA driver's) and cuBLAS/cuBLASLt 13, cuRAND 10 and
# cudart 13; this script adds to LD_LIBRARY_PATH the lib folders of the pip packages nvidia-cublas, nvidia-curand,
# nvidia-cuda-runtime and nvidia-cuda-nvrtc of the machine's python3 (PyTorch's), found with `pip show -f`.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

if [ "${1:-}" = "--pack" ]; then
    set -e
    SRC=${DUALNET_SHARED:-${SHARED:-$REPO/../shared}}
    BIN=$REPO/dist/dualnet-cuda.xz
    [ -f "$BIN" ] || { echo "no $BIN: run scripts/build-cuda.sh first" >&2; exit 2; }
    rm -rf "$REPO/.device"
    mkdir -p "$REPO/.device/shared/data/mnist"
    cp "$BIN" "$REPO/.device/"
    cp "$SRC"/data/mnist/*.gz "$REPO/.device/shared/data/mnist/"
    for d in "$SRC"/reference/*/; do
        c=$(basename "$d")
        mkdir -p "$REPO/.device/shared/reference/$c"
        cp "$d"model.net "$d"weights.safetensors "$d"inputs.safetensors "$REPO/.device/shared/reference/$c/"
        # The settings and the small arrays of expected.json; the layer bounds (most of its size) are compared
        # between CPU and CUDA only.
        python3 - "$d/expected.json" "$REPO/.device/shared/reference/$c/expected.json" <<'EOF'
import json, sys
e = json.load(open(sys.argv[1]))
for s in e["settings"]:
    s.pop("layer_bounds", None)
json.dump(e, open(sys.argv[2], "w"))
EOF
    done
    echo "packed $(du -sh "$REPO/.device" | cut -f1) into .device/ (carry it: carry [\".device\"])"
    exit 0
fi

OUT=${OUT:-$REPO/device-check-out}
mkdir -p "$OUT"
SUMMARY=$OUT/summary.txt
LOG=$OUT/log.txt
: >"$SUMMARY"
: >"$LOG"
say() { echo "$*" | tee -a "$SUMMARY"; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dualnet-check.XXXXXX")
T0=$(date +%s)

# --- the binary and the data ------------------------------------------------------------------------------------
DN=$WORK/dualnet
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
for b in ${DUALNET_BIN:-} dist/dualnet-cuda.xz .device/dualnet-cuda.xz dist/dualnet-cuda; do
    if [ -f "$b" ]; then
        case $b in *.xz) xz -dc "$b" >"$DN" ;; *) cp "$b" "$DN" ;; esac
        chmod +x "$DN"
        say "binary: $b"
        break
    fi
done
[ -x "$DN" ] || { say "FAIL: no CUDA binary (dist/dualnet-cuda.xz or .device/dualnet-cuda.xz)"; exit 2; }
S=${DUALNET_SHARED:-../shared}
if [ -d "$S/reference" ] && [ -d "$S/data/mnist" ]; then SHARED=$S; else SHARED=.device/shared; fi
[ -d "$SHARED/reference" ] || { say "FAIL: no reference data in $S or .device/shared"; exit 2; }
REF=$SHARED/reference
MNIST=$SHARED/data/mnist
say "shared data: $SHARED"

# --- run-time libraries -----------------------------------------------------------------------------------------
PY=$(command -v python3)
LIBS=""
for pkg in nvidia-cublas nvidia-curand nvidia-cuda-runtime nvidia-cuda-nvrtc; do
    loc=$("$PY" -m pip show -f "$pkg" 2>/dev/null | awk '/^Location:/{print $2}')
    [ -n "$loc" ] || continue
    for so in $("$PY" -m pip show -f "$pkg" 2>/dev/null | grep -E '/lib[^/]*\.so(\.[0-9]+)*$' | sed 's/^ *//'); do
        d=$(dirname "$loc/$so")
        case ":$LIBS:" in *":$d:"*) ;; *) LIBS=${LIBS:+$LIBS:}$d ;; esac
    done
done
export LD_LIBRARY_PATH=$LIBS${LD_LIBRARY_PATH:+${LIBS:+:}$LD_LIBRARY_PATH}
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >>"$LOG"
ldd "$DN" >>"$LOG" 2>&1
if ldd "$DN" | grep -q "not found"; then
    say "FAIL: missing libraries: $(ldd "$DN" | grep 'not found' | tr -s ' \t' ' ' | tr '\n' ';')"
fi
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | sed 's/^/gpu: /' | tee -a "$SUMMARY"
    GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)
else
    say "gpu: none (no nvidia-smi)"
    GPU=""
fi

# Run a step with a time limit, cut to what is left of the whole check's DEADLINE seconds (so that the check
# ends in time and writes its results); its wall seconds go to $WORK/<name>.secs, its output to the log.
DEADLINE=${DEADLINE:-500}
left() { echo $((DEADLINE - ($(date +%s) - T0))); }
step() {
    local name=$1 limit=$2
    shift 2
    local s e rc
    if [ "$(left)" -lt 15 ]; then
        echo "--- $name skipped: the check's deadline (${DEADLINE} s) is near" >>"$LOG"
        echo 124 >"$WORK/$name.rc"
        echo "null" >"$WORK/$name.secs"
        return 124
    fi
    [ "$limit" -gt "$(($(left) - 5))" ] && limit=$(($(left) - 5))
    s=$(date +%s.%N)
    timeout "$limit" "$@" >"$WORK/$name.out" 2>&1 </dev/null
    rc=$?
    e=$(date +%s.%N)
    python3 -c "print(round($e - $s, 3))" >"$WORK/$name.secs"
    echo "$rc" >"$WORK/$name.rc"
    { echo "--- $name (exit $rc, $(cat "$WORK/$name.secs") s): $*"; tail -c 3000 "$WORK/$name.out"; } >>"$LOG"
    return $rc
}

# --- 1. bounds: CPU against CUDA (and the reference) -----------------------------------------------------------
say ""
say "device: $DEVICE$([ "$QUICK" = 1 ] && echo ' (QUICK: shrunk data, a dry run)')"
say ""
say "1. bounds, CPU vs CUDA (f32, tolerance 1e-5 * max(1, max|ref|) per array)"
python3 - "$REF" >"$WORK/settings.tsv" <<'EOF'
import json, os, sys
ref = sys.argv[1]
for case in sorted(os.listdir(ref)):
    p = os.path.join(ref, case, "expected.json")
    if not os.path.isfile(p):
        continue
    for s in json.load(open(p))["settings"]:
        print(case, s["name"], s["epsilon"], s["norm"], "1" if s.get("bounded_input") else "0", sep="\t")
EOF
bounds_args() { # case eps norm bounded
    local a=(bounds --spec "$REF/$1/model.net" --weights "$REF/$1/weights.safetensors"
        --inputs "$REF/$1/inputs.safetensors" --eps "$2" --norm "$3")
    [ "$4" = 1 ] && a+=(--bounded)
    echo "${a[@]}"
}
# CPU runs in the background (16 cores) while the GPU runs; all done before any timing starts.
(
    while IFS=$'\t' read -r c n e nm bd; do
        [ "$(left)" -gt 330 ] || break
        # shellcheck disable=SC2046
        timeout 60 "$DN" $(bounds_args "$c" "$e" "$nm" "$bd") --device cpu --json "$WORK/b-$c-$n-cpu.json" \
            >>"$WORK/bounds-cpu.log" 2>&1 </dev/null
    done <"$WORK/settings.tsv"
) &
CPU_PID=$!
while IFS=$'\t' read -r c n e nm bd; do
    [ "$(left)" -gt 330 ] || { say "   (bounds phase cut short by the deadline)"; break; }
    # shellcheck disable=SC2046
    step "b-$c-$n-cuda" 60 "$DN" $(bounds_args "$c" "$e" "$nm" "$bd") --device "$DEVICE" --json "$WORK/b-$c-$n-cuda.json"
done <"$WORK/settings.tsv"
wait "$CPU_PID"
tail -c 2000 "$WORK/bounds-cpu.log" >>"$LOG" 2>/dev/null
python3 - "$REF" "$WORK" >"$WORK/bounds.json" 2>>"$LOG" <<'EOF'
import json, os, sys
ref, work = sys.argv[1], sys.argv[2]
TOL = 1e-5

def flat(v, out):
    if isinstance(v, list):
        for x in v:
            flat(x, out)
    elif isinstance(v, bool):
        out.append(float(v))
    elif isinstance(v, (int, float)):
        out.append(float(v))
    return out

def scaled(a, b):
    a, b = flat(a, []), flat(b, [])
    if len(a) != len(b):
        return float("inf")
    scale = max([1.0] + [abs(x) for x in b])
    return max([0.0] + [abs(x - y) / scale for x, y in zip(a, b)])

rows, worst = [], 0.0
for line in open(os.path.join(work, "settings.tsv")):
    case, name = line.split("\t")[:2]
    row = {"case": case, "setting": name}
    try:
        cpu = json.load(open(os.path.join(work, f"b-{case}-{name}-cpu.json")))
        gpu = json.load(open(os.path.join(work, f"b-{case}-{name}-cuda.json")))
    except (OSError, ValueError) as e:
        row.update(ok=False, error=f"missing output: {e}")
        rows.append(row)
        continue
    errs = {k: scaled(gpu[k], cpu[k]) for k in ("clean_logits", "margin_lb", "robust_ce", "robust_ce_per_example")}
    for node, lu in cpu["layer_bounds"].items():
        for side in ("lower", "upper"):
            errs[f"{node}.{side}"] = scaled(gpu["layer_bounds"].get(node, {}).get(side), lu[side])
    row["cuda_vs_cpu"] = max(errs.values())
    row["worst_array"] = max(errs, key=errs.get)
    row["flags_equal"] = gpu["uncertified"] == cpu["uncertified"]
    exp = json.load(open(os.path.join(ref, case, "expected.json")))
    s = next(s for s in exp["settings"] if s["name"] == name)
    rerrs = {"clean_logits": scaled(gpu["clean_logits"], exp["clean_logits"]),
             "margin_lb": scaled(gpu["margin_lb"], s["margin_lb"]), "robust_ce": scaled(gpu["robust_ce"], s["robust_ce"])}
    for node, lu in s.get("layer_bounds", {}).items():
        for side in ("lower", "upper"):
            rerrs[f"{node}.{side}"] = scaled(gpu["layer_bounds"][node][side], lu[side])
    row["cuda_vs_reference"] = max(rerrs.values())
    row["ok"] = row["cuda_vs_cpu"] <= TOL and row["cuda_vs_reference"] <= TOL and row["flags_equal"]
    worst = max(worst, row["cuda_vs_cpu"], row["cuda_vs_reference"])
    rows.append(row)
print(json.dumps({"tolerance": TOL, "all_ok": bool(rows) and all(r["ok"] for r in rows), "worst": worst,
                  "settings": rows}, indent=1))
EOF
python3 - "$WORK/bounds.json" <<'EOF' | tee -a "$SUMMARY"
import json, sys
try:
    b = json.load(open(sys.argv[1]))
except (OSError, ValueError) as e:
    print(f"   FAIL: no comparison ({e})"); sys.exit()
for r in b["settings"]:
    if "error" in r:
        print(f"   FAIL {r['case']}/{r['setting']}: {r['error']}")
    else:
        print(f"   {'ok  ' if r['ok'] else 'FAIL'} {r['case']}/{r['setting']}: cuda-cpu {r['cuda_vs_cpu']:.1e} "
              f"({r['worst_array']}), cuda-reference {r['cuda_vs_reference']:.1e}, flags equal {r['flags_equal']}")
print(f"   => {'PASS' if b['all_ok'] else 'FAIL'}: {len(b['settings'])} settings, worst scaled difference {b['worst']:.2e}")
EOF

# --- 2. training speed ------------------------------------------------------------------------------------------
TRAIN=(train --spec specs/mnist_small.net --data mnist --data-dir "$MNIST" --epochs 1 --eps 0.1 --eps-start 0.1
    --proj 50 --bounded true --batch 50 --test-limit 0 --device "$DEVICE" --quiet)
FULL=()
SHORT=(--limit 2000)
[ "$QUICK" = 1 ] && FULL=(--limit 500) && SHORT=(--limit 200)
# GPU memory in use, sampled every half second through the timed steps.
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 >"$WORK/gpumem.log" 2>/dev/null &
    MEM_PID=$!
fi
say ""
say "2. robust training on CUDA, mnist_small, proj 50, box, eps 0.1, batch 50"
step train2000 90 "$DN" "${TRAIN[@]}" "${SHORT[@]}" --out "$WORK/run2000"
say "   ${SHORT[1]} images: $(cat "$WORK/train2000.secs") s wall (exit $(cat "$WORK/train2000.rc")), epoch loop $(
    python3 -c "import json;print(json.loads(open('$WORK/run2000/metrics.jsonl').readline())['seconds'])" 2>/dev/null) s"

# --- 3. certification speed -------------------------------------------------------------------------------------
CERT=(certify --spec specs/mnist_small.net --weights "$REF/mnist_small_trained/weights.safetensors" --data mnist
    --data-dir "$MNIST" --eps 0.1 --bounded --device "$DEVICE" --quiet)
[ "$QUICK" = 1 ] && CERT+=(--limit 200)
say ""
say "3. exact certification of the 10,000 MNIST test images on CUDA (mnist_small_trained, eps 0.1, box)"
cert() {
    step "cert$1" "$2" "$DN" "${CERT[@]}" --batch "$1" --json "$WORK/cert$1.json"
    say "   batch $1: $(cat "$WORK/cert$1.secs") s wall (exit $(cat "$WORK/cert$1.rc")); $(grep -E 'certified robust error|time ' "$WORK/cert$1.out" 2>/dev/null | tr -s ' ' | tr '\n' ';')"
}
cert 50 100

# --- 2b. one full training epoch (last: the longest step) -------------------------------------------------------
say ""
say "2b. one epoch of robust training on the 60,000 MNIST training images (target <= 10 s on an H100)"
step train60k 240 "$DN" "${TRAIN[@]}" "${FULL[@]}" --out "$WORK/run60k"
say "   $(cat "$WORK/train60k.secs") s wall (exit $(cat "$WORK/train60k.rc")); epoch loop $(python3 -c "import json;print(json.loads(open('$WORK/run60k/metrics.jsonl').readline())['seconds'])" 2>/dev/null) s"
cp "$WORK/run60k/metrics.jsonl" "$OUT/train60k-metrics.jsonl" 2>/dev/null

say ""
say "3b. certification again with batch 200"
cert 200 80
[ -n "${MEM_PID:-}" ] && kill "$MEM_PID" 2>/dev/null
MEM=$(sort -n "$WORK/gpumem.log" 2>/dev/null | tail -n1)
say "   GPU memory in use, highest sample during steps 2-3: ${MEM:-n/a} MiB"

# --- results.json -----------------------------------------------------------------------------------------------
python3 - "$WORK" "$GPU" "$(($(date +%s) - T0))" >"$OUT/results.json" <<'EOF'
import json, os, sys
work, gpu, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
def read(p, f=lambda x: x):
    try:
        return f(open(os.path.join(work, p)).read().strip())
    except (OSError, ValueError):
        return None
def epoch(run):
    try:
        return json.loads(open(os.path.join(work, run, "metrics.jsonl")).readline())
    except (OSError, ValueError):
        return None
def cert(bs):
    try:
        return json.load(open(os.path.join(work, f"cert{bs}.json")))["summary"]
    except (OSError, ValueError, KeyError):
        return None
out = {"gpu": gpu, "total_seconds": total, "bounds": read("bounds.json", json.loads),
       "gpu_memory_mib_max": read("gpumem.log", lambda t: max(int(x) for x in t.split()))}
for k in ("train2000", "train60k", "cert50", "cert200"):
    out[k] = {"wall_seconds": read(f"{k}.secs", json.loads), "exit": read(f"{k}.rc", int)}
out["train2000"]["epoch"] = epoch("run2000")
out["train60k"]["epoch"] = epoch("run60k")
out["cert50"]["summary"] = cert(50)
out["cert200"]["summary"] = cert(200)
print(json.dumps(out, indent=1))
EOF
say ""
say "total $(($(date +%s) - T0)) s; results in $OUT (summary.txt, results.json, log.txt)"
rm -rf "$WORK"
