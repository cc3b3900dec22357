#!/usr/bin/env bash
# Coverage-guided fuzzing of every network decoder with libFuzzer, on stable Rust.
#
#   fuzz/run.sh                      # every target, 1,000,000 inputs each
#   FUZZ_RUNS=50000 fuzz/run.sh frame mls_batch
#
# The instrumentation is what cargo-fuzz passes to rustc, minus its sanitizer (-Zsanitizer is the
# only nightly-only part): SanitizerCoverage through stable -C flags. No nightly toolchain, no
# RUSTC_BOOTSTRAP. Each target starts from fuzz/corpus/<target> (seeded with real messages by
# tests/fuzz_smoke.rs) and stops after FUZZ_RUNS inputs; a crash, a hang (> 10 s for one input),
# an allocation over 256 MiB or an RSS over 2 GiB stops it with the input in
# fuzz/artifacts/<target>/. The last line of each run is libFuzzer's count of executed inputs.
set -euo pipefail
cd "$(dirname "$0")"
RUNS="${FUZZ_RUNS:-1000000}"
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(frame control_payload mls_message mls_batch identity_token)

FUZZ_FLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
# --target keeps RUSTFLAGS off build scripts and proc macros (they must not be instrumented).
HOST="$(rustc -vV | sed -n 's/^host: //p')"
RUSTFLAGS="$FUZZ_FLAGS" cargo build --release --bins --target "$HOST"
BIN="target/$HOST/release"

# Seed corpus: real messages of every kind each target decodes (a plain test build: no RUSTFLAGS).
(cd .. && SLIM_FUZZ_SEED_DIR="$PWD/fuzz/corpus" cargo test --quiet --test fuzz_smoke write_seed_corpus -- --ignored --exact)

for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  echo "== $t: $RUNS inputs"
  status=0
  "$BIN/$t" -runs="$RUNS" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=256 \
    -print_final_stats=1 -artifact_prefix="artifacts/$t/" "corpus/$t" >"$t.log" 2>&1 || status=$?
  grep -E "^#[0-9]+[[:space:]]+DONE|stat::(number_of_executed_units|peak_rss_mb)|ERROR|SUMMARY" "$t.log" || true
  [ "$status" -eq 0 ] || { echo "$t: libFuzzer exited $status (see fuzz/$t.log and fuzz/artifacts/$t/)"; exit "$status"; }
done
