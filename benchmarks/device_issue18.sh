#!/usr/bin/env bash
# Issue 18's GPU measurements, in stages (each a `run` of the device tool; results under $OUT,
# at most 8 files come back). COMMIT names the commit measured (the device copy's .git is stale).
#   bash benchmarks/device_issue18.sh step     # enwik8 step: default vs compiled, 1M, attention()
#   bash benchmarks/device_issue18.sh graph    # enwik8 under CUDA graphs, profiles, audio-65k
#   bash benchmarks/device_issue18.sh final    # the defaults at the final commit, attention()
#   bash benchmarks/device_issue18.sh presets  # the other GPU presets, default vs graphed
#   bash benchmarks/device_issue18.sh tests    # CUDA tests, audio-65k without recompute
#   bash benchmarks/device_issue18.sh kernels  # kernel CUDA tests, then each kernel per launch variant
#   bash benchmarks/device_issue18.sh check    # all CUDA tests, the kernels' defaults, attention() calls
#   bash benchmarks/device_issue18.sh steps    # enwik8 default step per attention, host cost
#   bash benchmarks/device_issue18.sh lean     # kernel tests, lean loops vs old, enwik8 step rows
#   bash benchmarks/device_issue18.sh final7   # the final commit: kernel tests, every row issue 18 asks
#   bash benchmarks/device_issue18.sh replay   # eager calls replayed whole vs launch by launch
#   bash benchmarks/device_issue18.sh final8   # host cost, the enwik8 default step
#   bash benchmarks/device_issue18.sh close8   # split's call at batch 4, 1M positions
#   bash benchmarks/device_issue18.sh final9   # Delta in the dQ programs: kernel tests, A/B, step
#   bash benchmarks/device_issue18.sh q64      # 64-row query tiles A/B, then every CUDA test
#   bash benchmarks/device_issue18.sh short    # short rows' 64-row forward/dQ tiles: tests, A/B, step
#   bash benchmarks/device_issue18.sh final10  # split's step profiled both ways, every CUDA test
#   bash benchmarks/device_issue18.sh isolated # enwik8 and audio-65k steps, each row its own process
#   bash benchmarks/device_issue18.sh ceiling  # plain Triton forwards (causal, fixed) vs ours, cuDNN
#   bash benchmarks/device_issue18.sh runs     # runs of full tiles: kernel tests, A/B per pattern
#   bash benchmarks/device_issue18.sh own      # dQ programs write their own tiles' dK/dV: tests, A/B, step
#   bash benchmarks/device_issue18.sh tma      # atomic dQ through TMA bulk reduces: tests, A/B, step
#   bash benchmarks/device_issue18.sh final16  # the final commit: steps (isolated), atomic step, kernels, calls
#   bash benchmarks/device_issue18.sh packed   # d(qkv) written whole: tests, kernels and steps A/B, guard probe
#   bash benchmarks/device_issue18.sh final18  # the final commit: enwik8 steps (isolated), kernels, calls
#   bash benchmarks/device_issue18.sh close18  # the final commit: audio-65k default, 1M positions
# (Fourteenth session: stage "after" ran at 56bc6c1 -- the owned tiles' dK/dV in a pass after
#  dQ's store, tried and removed; benchmarks/results/raw/2026-12-06-s14/commands.md.)
# (Eleventh session: stage "keyrows" ran at c13fdad -- the dK/dV kernel with its scores taken
#  keys on rows, tried and removed; benchmarks/results/raw/2026-12-06-s11/commands.md.)
#   bash benchmarks/device_issue18.sh abab     # split's step, short-row tiles off/on/off/on (processes)
set -u
out="${OUT:-/tmp}"
export PYTHONUNBUFFERED=1 COMMIT="${COMMIT:-unknown}"
log="$out/log-$1.txt"
stage() { echo "== $1 ($(date +%T))" | tee -a "$log"; }
enwik8_default() {  # the enwik8 step as every GPU preset runs it, per attention; $1 s, budget $2
    stage "enwik8 default step (compile + CUDA graphs)"
    timeout "$1" python3 benchmarks/model_step.py --shapes enwik8 --modes default \
        --only "dense,fixed,strided split,strided merge" --budget "$2" \
        --out "$out/ms" >> "$log" 2>&1
}
cuda_tests() {  # every CUDA-marked test within $1 s (or TEST_TIMEOUT); further args go to pytest
    stage "CUDA tests"
    local limit="$1"; shift
    TEST_TIMEOUT="${TEST_TIMEOUT:-$limit}" bash benchmarks/device_tests.sh "$@" > /dev/null 2>&1
    tail -25 "$out/cuda-tests.txt" >> "$log"
}
enwik8_isolated() {  # the enwik8 default step, each row its own process; $1 s, budget $2
    stage "enwik8 default step, each row its own process"
    timeout "$1" python3 benchmarks/model_step.py --shapes enwik8 --modes default --isolate \
        --only "dense,fixed,strided split,strided merge" --budget "$2" --out "$out/ms" >> "$log" 2>&1
}
call_rows() {  # attention() at the enwik8 shape against its kernels' GPU time, ours and cuDNN's
    stage "attention() call vs its kernels"
    timeout 60 python3 benchmarks/attention_call.py --n 12288 --batch 2 --only triton,sdpa \
        --out "$out/call" >> "$log" 2>&1
}
final_kernels() {  # kernel stages $2 (cuDNN causal beside them) within $1 s, then call_rows
    stage "kernel stages (cuDNN causal beside them)"
    timeout "$1" python3 benchmarks/kernel_stages.py --out "$out/ks" --runs "$2" >> "$log" 2>&1
    call_rows
}
kernel_tests() {  # the CUDA tests of tests/kernels/test_cuda.py matching $1 (pytest -k)
    stage "CUDA tests of the Triton kernels"
    timeout 170 python3 -m pytest -q -rfE -p no:cacheprovider -m cuda tests/kernels/test_cuda.py \
        -k "$1" > "$out/kernel-tests.txt" 2>&1
    tail -5 "$out/kernel-tests.txt" >> "$log"
}
case "$1" in
step)
    stage "enwik8 default vs compiled-norecompute"
    timeout 330 python3 benchmarks/model_step.py --shapes enwik8 \
        --modes default,compiled-norecompute --only "dense,fixed,strided split" --budget 300 \
        --out "$out/ms" >> "$log" 2>&1
    stage "1M positions, recompute_group 2, bf16 checkpoints"
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True timeout 150 python3 \
        benchmarks/model_step.py --shapes 1m --modes eager-recompute --out "$out/m1" >> "$log" 2>&1
    stage "attention() call vs its kernels"
    timeout 100 python3 benchmarks/attention_call.py --n 12288 --batch 2 --only triton,sdpa \
        --out "$out/call" >> "$log" 2>&1
    ;;
graph)
    stage "enwik8 graphed (CUDA graphs of the compiled blocks)"
    timeout 200 python3 benchmarks/model_step.py --shapes enwik8 --modes graphed-norecompute \
        --only "dense,fixed,strided split" --budget 180 --out "$out/mg" >> "$log" 2>&1
    stage "profiles: split, default and compiled"
    timeout 120 python3 benchmarks/model_step.py --shapes enwik8 --warmup 2 --steps 2 \
        --modes default,compiled-norecompute --only "strided split" --profile \
        --out "$out/prof" >> "$log" 2>&1
    stage "host cost"
    timeout 60 python3 benchmarks/host_cost.py --out "$out/hc" >> "$log" 2>&1
    stage "audio-65k default vs eager-norecompute"
    timeout 180 python3 benchmarks/model_step.py --shapes audio-65k \
        --modes default,eager-norecompute --only "dense,strided split" --budget 160 \
        --out "$out/ma" >> "$log" 2>&1
    ;;
final)
    enwik8_default 200 180
    stage "audio-65k default (compile + CUDA graphs, no recompute)"
    timeout 170 python3 benchmarks/model_step.py --shapes audio-65k --modes default \
        --only "dense,strided split" --budget 150 --out "$out/ma" >> "$log" 2>&1
    stage "attention() call vs its kernels, graphed, flex"
    timeout 170 python3 benchmarks/attention_call.py --n 12288 --batch 2 --graphed \
        --out "$out/call" >> "$log" 2>&1
    ;;
presets)
    stage "the other GPU presets: default vs graphed without recompute"
    timeout 215 python3 benchmarks/model_step.py --warmup 2 --steps 3 --budget 190 \
        --shapes imagenet64,cifar10,text-gpu,audio-gpu,wiki-gpu,fashion-mnist-gpu \
        --modes default,graphed-norecompute --out "$out/mp" >> "$log" 2>&1
    ;;
kernels)
    kernel_tests "triton or wide or direct"
    stage "kernel stages per launch variant (float64 check at N = 2,048 first)"
    timeout 390 python3 benchmarks/kernel_stages.py --out "$out/ks" >> "$log" 2>&1
    ;;
check)
    # The atomic-dQ variant has never run on a GPU: it runs last and in processes of its own,
    # so that a fault there cannot take the other rows with it.
    TEST_TIMEOUT=300 cuda_tests 300 -k "not atomic"
    stage "kernel stages, defaults"
    timeout 100 python3 benchmarks/kernel_stages.py --out "$out/ks" \
        --runs "fixed:default+old-tile-major+fwd-g4w8,split:default+old-tile-major,local:default,causal:default+old-tile-major" \
        >> "$log" 2>&1
    stage "attention() call vs its kernels"
    timeout 100 python3 benchmarks/attention_call.py --n 12288 --batch 2 --only triton,sdpa \
        --out "$out/call" >> "$log" 2>&1
    stage "atomic dQ: CUDA test, then its kernel stages"
    timeout 60 python3 -m pytest -q -rfE -p no:cacheprovider -m cuda tests/kernels/test_cuda.py \
        -k atomic > "$out/atomic-tests.txt" 2>&1
    tail -5 "$out/atomic-tests.txt" >> "$log"
    timeout 60 python3 benchmarks/kernel_stages.py --out "$out/ksa" \
        --runs "fixed:atomic-dq,split:atomic-dq,causal:atomic-dq" >> "$log" 2>&1
    ;;
steps)
    enwik8_default 260 240
    stage "host cost"
    timeout 60 python3 benchmarks/host_cost.py --out "$out/hc" >> "$log" 2>&1
    ;;
tests)
    cuda_tests 400
    stage "audio-65k default vs eager-norecompute"
    timeout 200 python3 benchmarks/model_step.py --shapes audio-65k \
        --modes default,eager-norecompute --only "dense,strided split" --budget 180 \
        --out "$out/ma" >> "$log" 2>&1
    ;;
lean)
    # The forward and dQ loops without the per-score scale multiply and valid-slot select
    # (LEAN, seventh session) against the loops before ("old-loop"), then the enwik8 step,
    # then the CUDA tests outside the kernels.
    kernel_tests "triton or wide or direct or atomic"
    stage "kernel stages: lean loops vs old"
    timeout 150 python3 benchmarks/kernel_stages.py --out "$out/ks" \
        --runs "fixed:default+old-loop+fwd-g4w4+g2+dkdv-w8s2,causal:default+old-loop,split:default+old-loop,local:default+old-loop" \
        >> "$log" 2>&1
    enwik8_default 120 100
    stage "enwik8 eager and compiled rows"
    timeout 130 python3 benchmarks/model_step.py --shapes enwik8 \
        --modes eager-norecompute,compiled-norecompute,eager-recompute \
        --only "dense,fixed,strided split" --budget 110 --out "$out/me" >> "$log" 2>&1
    TEST_TIMEOUT=140 cuda_tests 140 -k "not (triton or wide or direct or atomic)"
    ;;
final7)
    # Everything issue 18 asks for at the final commit, most needed first (seventh session):
    # a call cut short by the device budget still returns what finished.
    for k in lean triton_vs_float64; do
        timeout 150 python3 -m pytest -q -rfE -p no:cacheprovider -m cuda \
            tests/kernels/test_cuda.py -k "$k" >> "$out/kernel-tests.txt" 2>&1
        tail -2 "$out/kernel-tests.txt" >> "$log"
    done
    enwik8_default 90 75
    stage "kernel stages, defaults"
    timeout 60 python3 benchmarks/kernel_stages.py --out "$out/ks" \
        --runs "fixed:default,causal:default,split:default,local:default" >> "$log" 2>&1
    stage "enwik8 eager and compiled rows; attention() call vs its kernels"
    timeout 60 python3 benchmarks/model_step.py --shapes enwik8 \
        --modes eager-norecompute,compiled-norecompute,eager-recompute \
        --only "dense,fixed,strided split" --budget 50 --out "$out/me" >> "$log" 2>&1
    timeout 30 python3 benchmarks/attention_call.py --n 12288 --batch 2 --only triton,sdpa \
        --out "$out/call" >> "$log" 2>&1
    stage "the other kernel CUDA tests"
    timeout 120 python3 -m pytest -q -rfE -p no:cacheprovider -m cuda tests/kernels/test_cuda.py \
        -k "wide or direct or atomic" > "$out/kernel-tests-2.txt" 2>&1
    tail -3 "$out/kernel-tests-2.txt" >> "$log"
    stage "audio-65k default"
    timeout 70 python3 benchmarks/model_step.py --shapes audio-65k --modes default \
        --only "dense,strided split" --budget 60 --out "$out/ma" >> "$log" 2>&1
    ;;
replay)
    # Eager calls replayed whole (kernels/launcher.py, eighth session) against the same calls
    # launched kernel by kernel, in one call on one machine; the eager step rows; then every
    # CUDA-marked test (most needed first: a call cut short keeps what finished).
    stage "attention() call vs its kernels: replayed, then launch by launch"
    timeout 60 python3 benchmarks/attention_call.py --n 12288 --batch 2 --only triton,sdpa \
        --out "$out/call" >> "$log" 2>&1
    timeout 50 python3 benchmarks/attention_call.py --n 12288 --batch 2 --only triton \
        --no-replay --out "$out/callnr" >> "$log" 2>&1
    stage "enwik8 eager rows"
    timeout 100 python3 benchmarks/model_step.py --shapes enwik8 \
        --modes eager-norecompute,eager-recompute \
        --only "dense,fixed,strided split" --budget 85 --out "$out/me" >> "$log" 2>&1
    TEST_TIMEOUT=330 cuda_tests 330
    ;;
close8)
    # Is split's replayed call (1.23x its kernels at 2 x 12,288) a fixed cost per call? The
    # same calls at twice the batch; then the million positions at the final commit.
    stage "attention() call vs its kernels at batch 4"
    timeout 70 python3 benchmarks/attention_call.py --n 12288 --batch 4 --only triton \
        --out "$out/call4" >> "$log" 2>&1
    stage "1M positions (eager, recompute_group 2, bf16 checkpoints)"
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True timeout 170 python3 \
        benchmarks/model_step.py --shapes 1m --modes eager-recompute --out "$out/m1" >> "$log" 2>&1
    ;;
final9)
    # The ninth session's final commit: Delta in the dQ programs (no Delta launch). Its A/B
    # and the sole-reader tiles that were tried and removed ran as stage "sole" at b70d1f4.
    # Sized for the session's last 300 device-seconds.
    timeout 120 python3 -m pytest -q -rfE -p no:cacheprovider -m cuda tests/kernels/test_cuda.py \
        -k "triton_vs_float64 or delta_launch" > "$out/kernel-tests.txt" 2>&1
    tail -3 "$out/kernel-tests.txt" >> "$log"
    stage "kernel stages: default against the Delta launch"
    timeout 45 python3 benchmarks/kernel_stages.py --out "$out/ks" --shapes 12288x2 --runs \
        "fixed:default+delta-launch,split:default+delta-launch" >> "$log" 2>&1
    enwik8_default 90 75
    ;;
q64)
    # Tenth session: 64-row query tiles (ptxas: no forward spills) against the default 128,
    # then the whole CUDA suite at this commit.
    stage "kernel stages: 64-row query tiles"
    timeout 150 python3 benchmarks/kernel_stages.py --out "$out/ks" --shapes 12288x2,16384x4 \
        --runs "fixed:default+q64+q64-tiles+q64-g4,causal:default+q64+q64-g4,split:default+q64,local:default+q64" \
        >> "$log" 2>&1
    cuda_tests 400
    ;;
short)
    # Tenth session: short-row components (local, strided) run forward and dQ on 64-row query
    # tiles under 128-row dK/dV lists (triton_attention.short_row_q_block), the default at
    # this stage's commit (30ac3c8) only; q128 = 128 rows throughout, the default before and after.
    stage "CUDA tests of the Triton kernels"
    timeout 150 python3 -m pytest -q -rfE -p no:cacheprovider -m cuda tests/kernels/test_cuda.py \
        -k "triton_vs_float64_bf16 or short_row or direct" > "$out/kernel-tests.txt" 2>&1
    tail -3 "$out/kernel-tests.txt" >> "$log"
    stage "kernel stages: short rows' tiles against 128 rows throughout"
    timeout 90 python3 benchmarks/kernel_stages.py --out "$out/ks" --shapes 12288x2,16384x4 \
        --runs "split:default+q128,local:default+q128,merge:default+q128" >> "$log" 2>&1
    enwik8_default 100 85
    stage "enwik8 default step, 128-row tiles throughout (q128)"
    timeout 80 python3 benchmarks/model_step.py --shapes enwik8 --modes default \
        --only "dense,strided split,strided merge" --budget 65 --out "$out/ms-q128" \
        --config '{"tiles": {"short_q_block": 128}}' >> "$log" 2>&1
    ;;
final10)
    # Why split's step lost 9% on 64-row forward/dQ tiles (call 2) while its kernels gained 6%:
    # one profiled step each way, then every CUDA test.
    for cfg in '{}' '{"tiles": {"short_q_block": 128}}'; do
        stage "enwik8 default step, strided split, profiled, CONFIG $cfg"
        timeout 60 python3 benchmarks/model_step.py --shapes enwik8 --modes default \
            --only "strided split" --warmup 1 --steps 2 --profile --config "$cfg" \
            --out "$out/prof" >> "$log" 2>&1
        # model-step-3.json: {}; model-step-34.json: q128 (named by the config's length)
        mv "$out/prof/model-step.json" "$out/prof/model-step-$(echo "$cfg" | wc -c).json"
    done
    cuda_tests 250 --ignore tests/patterns/test_export_cuda.py  # Flex only: untouched here
    ;;
abab)
    # NOTES.md, tenth session, Open 1: is split's 9% step loss with short-row tiles real? Four
    # processes, off / on / off / on, each timing dense and split (10 steps) and nothing else,
    # so neither side runs after another model's graphs. ~40 s a process on an H100.
    for i in 1 2; do
        for cfg in '{}' '{"tiles": {"short_q_block": 64}}'; do
            name="off"; [ "$cfg" = '{}' ] || name="short64"
            stage "enwik8 default step, dense and strided split, $name, round $i"
            timeout 90 python3 benchmarks/model_step.py --shapes enwik8 --modes default \
                --only "dense,strided split" --steps 10 --config "$cfg" \
                --out "$out/ab-$i-$name" >> "$log" 2>&1
        done
    done
    ;;
isolated)
    # Written in the eleventh session for the next (NOTES.md, Open 2-3), untried: the enwik8
    # default step with every row in a process of its own (model_step.py --isolate), then
    # audio-65k's default step with and without short-row tiles, also isolated.
    stage "enwik8 default step, each row its own process"
    timeout 240 python3 benchmarks/model_step.py --shapes enwik8 --modes default --isolate \
        --only "dense,fixed,strided split,strided merge" --budget 220 --out "$out/ms" >> "$log" 2>&1
    for cfg in '{}' '{"tiles": {"short_q_block": 64}}'; do
        name="off"; [ "$cfg" = '{}' ] || name="short64"
        stage "audio-65k default step, short-row tiles $name, each row its own process"
        timeout 150 python3 benchmarks/model_step.py --shapes audio-65k --modes default \
            --isolate --only "dense,strided split" --budget 140 --config "$cfg" \
            --out "$out/audio-$name" >> "$log" 2>&1
    done
    ;;
ceiling)
    # Written in the eleventh session for the next (NOTES.md, Open 1), untried: is the gap to
    # cuDNN our tile lists or Triton's forward itself? And would fixed's summary keys laid out
    # contiguously pay? (benchmarks/attention_ceiling.py)
    stage "forward: plain Triton probes (causal; fixed on compacted summaries), ours, cuDNN"
    timeout 200 python3 benchmarks/attention_ceiling.py --out "$out/cc" >> "$log" 2>&1
    ;;
runs)
    # Twelfth session: each row's run of full tiles, its positions from the loop counter (no
    # list loads; unmasked where nothing is padded), the ceiling stage's lead.
    kernel_tests "runs or triton_vs_float64_bf16"
    stage "kernels: runs vs none, per pattern"
    timeout 330 python3 benchmarks/kernel_stages.py --out "$out/ks" --runs "fixed:default+no-runs,causal:default+no-runs,split:default+runs-all,local:default+runs-all,merge:default+runs-all" >> "$log" 2>&1
    ;;
own)
    # Thirteenth session: a key tile only one query tile reads gets its dK/dV from that tile's
    # dQ program (fixed: 128 of 160 one-step dK/dV programs per head at 16,384 positions).
    stage "kernels: owned tiles vs none"
    timeout 150 python3 benchmarks/kernel_stages.py --out "$out/ks" --runs "fixed:default+no-own,causal:default+own-all,local:default+own-all" >> "$log" 2>&1
    kernel_tests "owned or triton_vs_float64_bf16 or atomic"
    stage "enwik8 default step, each row its own process"
    timeout 200 python3 benchmarks/model_step.py --shapes enwik8 --modes default --isolate \
        --only "dense,fixed" --budget 180 --out "$out/ms" >> "$log" 2>&1
    ;;
tma)
    # Sixteenth session: the opt-in atomic-dQ backward adds each dQ tile with one TMA bulk
    # reduce (cp.reduce.async.bulk.tensor, FlashAttention-3's way) instead of element atomics.
    kernel_tests "atomic"
    stage "kernels: deterministic vs atomic dQ (TMA reduce / element atomics / 2 stages)"
    timeout 220 python3 benchmarks/kernel_stages.py --out "$out/ks" --runs "causal:default+atomic-dq+atomic-dq-elem+atomic-dq-s2,fixed:default+atomic-dq+atomic-dq-elem" >> "$log" 2>&1
    stage "enwik8 default step, each row its own process; fixed with atomic dQ"
    timeout 130 python3 benchmarks/model_step.py --shapes enwik8 --modes default --isolate \
        --only "dense,fixed" --budget 120 --out "$out/ms" >> "$log" 2>&1
    timeout 70 python3 benchmarks/model_step.py --shapes enwik8 --modes default --isolate \
        --only "fixed" --config '{"dkdv": {"atomic_dq": 1}}' --budget 60 \
        --out "$out/ms2" >> "$log" 2>&1
    ;;
final16)
    # Sixteenth session's final commit, the rows issue 18 asks for, most needed first.
    enwik8_isolated 230 210
    stage "fixed with the opt-in atomic dQ (the compiled path's launches)"
    timeout 75 python3 benchmarks/model_step.py --shapes enwik8 --modes default --isolate \
        --only "fixed" --config '{"dkdv": {"atomic_dq": 1}}' --budget 60 \
        --out "$out/ms2" >> "$log" 2>&1
    final_kernels 120 "fixed:default,causal:default+atomic-dq"
    ;;
packed)
    # Seventeenth session: the model calls the op on its qkv projection whole, and the backward
    # writes d(qkv) as one tensor (no concatenation of dq, dk, dv after it). A/B against the
    # call on q, k, v views, then the atomic-dQ guard not yet run on a GPU.
    kernel_tests "packed or head_dim_128"
    stage "kernels: packed (default) vs views"
    timeout 150 python3 benchmarks/kernel_stages.py --out "$out/ks" \
        --runs "fixed:default+views,causal:default+views,split:default+views" >> "$log" 2>&1
    stage "enwik8 default step, each row its own process: packed, then views"
    timeout 170 python3 benchmarks/model_step.py --shapes enwik8 --modes default --isolate \
        --only "dense,fixed,strided split" --budget 160 --out "$out/ms" >> "$log" 2>&1
    timeout 120 python3 benchmarks/model_step.py --shapes enwik8 --modes default --isolate \
        --only "fixed,strided split" --qkv-views --budget 110 --out "$out/ms2" >> "$log" 2>&1
    stage "atomic-dQ shared-memory guard"
    timeout 60 python3 benchmarks/atomic_dq_fits_probe.py >> "$log" 2>&1
    ;;
final18)
    # Eighteenth session: the rows issue 18 asks for at the final commit, most needed first.
    enwik8_isolated 230 210
    final_kernels 150 "fixed:default,causal:default+atomic-dq,split:default"
    ;;
close18)
    stage "audio-65k default (compile + CUDA graphs, no recompute), each row its own process"
    timeout 200 python3 benchmarks/model_step.py --shapes audio-65k --modes default --isolate \
        --only "dense,strided split" --budget 180 --out "$out/ma" >> "$log" 2>&1
    stage "1M positions (eager, recompute_group 2, bf16 checkpoints)"
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True timeout 200 python3 \
        benchmarks/model_step.py --shapes 1m --modes eager-recompute --out "$out/m1" >> "$log" 2>&1
    ;;
final8)
    stage "host cost (replayed)"
    timeout 60 python3 benchmarks/host_cost.py >> "$log" 2>&1
    enwik8_default 100 85
    ;;
esac
stage done
grep -E "tok/s|call |OOM|Error|error|passed|failed|groups=|cudnn causal" "$log" | tail -60
