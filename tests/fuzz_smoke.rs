//! The short fuzz run in CI: every network decoder's fuzz target (fuzz/targets.rs) gets its seed
//! inputs (real messages), the saved regression inputs in fuzz/regressions/<target>/, and then
//! random mutations of them for a time budget. Not coverage-guided (that is `task fuzz`, which
//! needs an instrumented build of every dependency); this replays what the guided runs found and
//! keeps the targets compiling and passing on every commit.
//!
//! `SLIM_FUZZ_SECS` (default 1.5) is the mutation budget per target, `SLIM_FUZZ_SEED` fixes the
//! random seed (printed on failure with the input, which is also written to target/fuzz-failures/).

#[path = "../fuzz/targets.rs"]
mod targets;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Longest time one input may take (a debug build; release runs are ~100x faster).
const SLOW_INPUT: Duration = Duration::from_secs(5);
/// Largest input the mutator makes.
const MAX_LEN: usize = 16 * 1024;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn saved_inputs(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    paths.into_iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

/// One random edit, like libFuzzer's basic mutators.
fn mutate(rng: &mut StdRng, input: &mut Vec<u8>, pool: &[Vec<u8>]) {
    const INTERESTING: &[u8] = &[0, 1, 0x7f, 0x80, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff];
    let len = input.len();
    match rng.random_range(0..8u8) {
        0 if len > 0 => {
            let i = rng.random_range(0..len);
            input[i] ^= 1 << rng.random_range(0..8u32);
        }
        1 if len > 0 => {
            let i = rng.random_range(0..len);
            input[i] = rng.random();
        }
        2 if len > 0 => {
            let i = rng.random_range(0..len);
            input[i] = INTERESTING[rng.random_range(0..INTERESTING.len())];
        }
        3 => {
            let i = rng.random_range(0..=len);
            let n = rng.random_range(1..=16usize);
            let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            input.splice(i..i, bytes);
        }
        4 if len > 0 => {
            let i = rng.random_range(0..len);
            let n = rng.random_range(1..=(len - i).min(32));
            input.drain(i..i + n);
        }
        5 if len > 0 => {
            let i = rng.random_range(0..len);
            let n = rng.random_range(1..=(len - i).min(64));
            let copy = input[i..i + n].to_vec();
            let at = rng.random_range(0..=len);
            input.splice(at..at, copy);
        }
        6 if !pool.is_empty() => {
            let other = &pool[rng.random_range(0..pool.len())];
            let cut = rng.random_range(0..=len);
            let from = rng.random_range(0..=other.len());
            input.truncate(cut);
            input.extend_from_slice(&other[from..]);
        }
        _ if len > 0 => {
            let i = rng.random_range(0..len);
            input.truncate(i);
        }
        _ => input.push(rng.random()),
    }
    input.truncate(MAX_LEN);
}

fn fail(target: &str, seed: u64, input: &[u8], why: &str) -> ! {
    let dir = root().join("target").join("fuzz-failures").join(target);
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join(format!("seed-{seed}"));
    let _ = std::fs::write(&file, input);
    let hex: String = input.iter().take(256).map(|b| format!("{b:02x}")).collect();
    panic!("{target}: {why} (SLIM_FUZZ_SEED={seed}, input in {}): {hex}", file.display());
}

fn run_one(target: &str, f: fn(&[u8]), seed: u64, input: &[u8]) {
    let started = Instant::now();
    if catch_unwind(AssertUnwindSafe(|| f(input))).is_err() {
        fail(target, seed, input, "panicked");
    }
    if started.elapsed() > SLOW_INPUT {
        fail(target, seed, input, &format!("took {:?}", started.elapsed()));
    }
}

#[test]
fn every_decoder_survives_its_corpus_and_random_mutations() {
    let budget = std::env::var("SLIM_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_millis(1500));
    let seed = std::env::var("SLIM_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    let mut report = Vec::new();
    for (target, f) in targets::TARGETS {
        let mut pool = targets::seeds(target);
        pool.extend(saved_inputs(&root().join("fuzz").join("regressions").join(target)));
        assert!(!pool.is_empty(), "{target}: no seed inputs");
        for input in &pool {
            run_one(target, *f, seed, input);
        }
        let mut rng = StdRng::seed_from_u64(seed ^ target.len() as u64);
        let started = Instant::now();
        let mut runs = 0u64;
        while started.elapsed() < budget && runs < 10_000_000 {
            let mut input = pool[rng.random_range(0..pool.len())].clone();
            for _ in 0..rng.random_range(1..=8u32) {
                mutate(&mut rng, &mut input, &pool);
            }
            run_one(target, *f, seed, &input);
            runs += 1;
        }
        report.push(format!("{target}: {} saved + {runs} mutated", pool.len()));
    }
    eprintln!("fuzz smoke (seed {seed}): {}", report.join(", "));
}

/// Writes every target's seed inputs to `$SLIM_FUZZ_SEED_DIR/<target>/` (fuzz/run.sh does this
/// before a guided run).
#[test]
#[ignore = "writes the seed corpus for fuzz/run.sh"]
fn write_seed_corpus() {
    let Some(dir) = std::env::var_os("SLIM_FUZZ_SEED_DIR") else { return };
    for (target, _) in targets::TARGETS {
        let dir = Path::new(&dir).join(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        for (i, input) in targets::seeds(target).iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), input).expect("seed written");
        }
    }
}
