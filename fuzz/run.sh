#!/usr/bin/env bash
# Fuzzes every target for a bounded time: fuzz/run.sh [SECONDS_PER_TARGET] (default 45).
#
# Works on the stable toolchain: cargo-fuzz needs nightly-only flags (-Zsanitizer=address and
# the coverage passes), which RUSTC_BOOTSTRAP=1 unlocks for this build alone. Installs cargo-fuzz
# if it is missing, builds every target once (release, debug assertions, AddressSanitizer), then
# runs each from fuzz/seeds/<t> plus fuzz/regressions/<t>, copied into a temporary corpus so the
# run never writes into the repository. A crashing input is saved as fuzz/artifacts/<t>/crash-*;
# add it to fuzz/regressions/<t>/ so `cargo test --manifest-path fuzz/Cargo.toml` replays it.
# Exits 1 if any target failed. Wall time: about 5 x SECONDS_PER_TARGET plus the build.
#
# Environment: FUZZ_TOOLCHAIN (default stable), FUZZ_SANITIZER (default address; "none" runs
# faster and still catches every panic, but no longer checks the unsafe code in dependencies
# such as memchr's SIMD line-end search).
set -euo pipefail
cd "$(dirname "$0")"

secs=${1:-45}
if ! [[ $secs =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: fuzz/run.sh [SECONDS_PER_TARGET]" >&2
  exit 2
fi
toolchain=${FUZZ_TOOLCHAIN:-stable}
sanitizer=${FUZZ_SANITIZER:-address}

# Target name and the longest input worth trying (a framer input holds a few lines, a config
# file a few dozen keys).
targets=(framer sanitise nick_and_command admin_request config wrap)
declare -A max_len=([framer]=4096 [sanitise]=2048 [nick_and_command]=512 [admin_request]=2048 [config]=4096 [wrap]=2048)

cargo_cmd=(cargo)
if command -v rustup >/dev/null; then
  cargo_cmd+=("+$toolchain")
fi

step() { printf '\n==== %s (%(%H:%M:%S)T)\n' "$*" -1; }

step "cargo-fuzz"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
cargo fuzz --version
"${cargo_cmd[@]}" --version

step "build (release, debug assertions, sanitizer: $sanitizer)"
export RUSTC_BOOTSTRAP=1
# From the repository root, where cargo-fuzz looks for fuzz/.
(cd .. && "${cargo_cmd[@]}" fuzz build --release --debug-assertions --sanitizer "$sanitizer" </dev/null)
triple=$(rustc -vV | sed -n 's/^host: //p')
bin_dir=target/$triple/release

work=$(mktemp -d "${TMPDIR:-/tmp}/groupchatd-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The last value of "<label> N" on a libFuzzer status line, e.g. "cov: 1234".
last_stat() { { grep -o "$1 [0-9]*" "$2" || true; } | tail -n 1 | awk '{print $2}'; }

declare -A runs rate cov result
failed=0
for t in "${targets[@]}"; do
  step "fuzz $t for ${secs}s"
  corpus=$work/corpus/$t
  mkdir -p "$corpus" "artifacts/$t"
  find "seeds/$t" "regressions/$t" -maxdepth 1 -type f ! -name '.*' -exec cp -t "$corpus" {} + 2>/dev/null || true
  log=$work/$t.log
  status=0
  # -max_total_time bounds the fuzzing; the outer timeout only guards against a hung process.
  timeout --kill-after=10 $((secs + 120)) "$bin_dir/$t" \
    -max_total_time="$secs" -max_len="${max_len[$t]}" -rss_limit_mb=2048 -timeout=10 \
    -dict="dicts/$t.dict" -artifact_prefix="artifacts/$t/" -print_final_stats=1 \
    "$corpus" </dev/null >"$log" 2>&1 || status=$?
  # "Done N runs in S second(s)" ends a clean run; after a crash only the final stats have N.
  runs[$t]=$(sed -n -e 's/^Done \([0-9]*\) runs in.*/\1/p' \
    -e 's/^stat::number_of_executed_units: *//p' "$log" | sed -n 1p)
  rate[$t]=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  cov[$t]=$(last_stat 'cov:' "$log")
  if [ "$status" -eq 0 ] && [ -n "${runs[$t]}" ]; then
    result[$t]=ok
    grep -E '^(Done |stat::)' "$log" || true
  else
    result[$t]="FAILED (exit $status)"
    failed=1
    # The report: from the panic (or libFuzzer's error banner) on, without the sanitizer's
    # stack frames, which only show libFuzzer's own panic hook.
    start=$(grep -n -m1 -E 'panicked at|^==[0-9]+== ?ERROR|^ERROR:' "$log" | cut -d: -f1 || true)
    tail -n +"${start:-1}" "$log" | grep -v -E '^ +#[0-9]+ 0x' | head -n 60 || true
    saved=$(sed -n 's/.*Test unit written to \([^ ]*\).*/fuzz\/\1/p' "$log" | tr '\n' ' ')
    echo "input saved as: ${saved:-(none)}"
  fi
  echo "$t: ${runs[$t]:-?} runs, ${rate[$t]:-?} exec/s, cov ${cov[$t]:-?}: ${result[$t]}"
done

step "summary (${secs}s per target, sanitizer $sanitizer)"
printf '%-18s %12s %8s %7s  %s\n' target runs exec/s cov result
for t in "${targets[@]}"; do
  printf '%-18s %12s %8s %7s  %s\n' "$t" "${runs[$t]:-?}" "${rate[$t]:-?}" "${cov[$t]:-?}" "${result[$t]}"
done
if [ "$failed" -ne 0 ]; then
  echo
  echo "A target failed. Reproduce with fuzz/target/$triple/release/<target> fuzz/artifacts/<target>/<file>;"
  echo "once fixed, keep the input: move it to fuzz/regressions/<target>/ (cargo test replays it)."
  exit 1
fi
