//! Compiles proto/dataplane.proto and proto/mesh.proto without a system `protoc` (protox parses it in Rust), and
//! records the build date and git revision for `build_info`.
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/dataplane.proto");
    println!("cargo:rerun-if-changed=proto/mesh.proto");
    println!("cargo:rerun-if-changed=build.rs");
    let fds = protox::compile(["proto/dataplane.proto", "proto/mesh.proto"], ["proto"])?;
    // Payloads (`Content.blob`, written by hand in src/wire/fast.rs) are `bytes::Bytes`: decoding
    // slices the received buffer instead of copying, and a message kept for retransmission shares
    // its payload with the copy on the wire.
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Written by hand (src/wire/envelope.rs): the identity token kept apart from the metadata
        // map, as shared bytes; its oneof's variants boxed (a `Message` is a few words, not ~450 bytes).
        .extern_path(".dataplane.proto.v1.Message", "crate::wire::envelope::Message")
        // Written by hand (src/wire/original.rs): its strings are slices of the received frame.
        .extern_path(".dataplane.proto.v1.OriginalName", "crate::wire::original::OriginalName")
        // Written by hand (src/wire/fast.rs): a name written in one piece, a content type not
        // allocated per message.
        .extern_path(".dataplane.proto.v1.Name", "crate::wire::fast::Name")
        .extern_path(".dataplane.proto.v1.Content", "crate::wire::fast::Content")
        .compile_fds(fds)?;

    println!("cargo:rustc-env=SLIM_BUILD_DATE={}", utc_now_iso8601());
    if let Some(sha) = git_short_sha() {
        println!("cargo:rustc-env=SLIM_GIT_SHA={sha}");
    }
    for path in git_head_files() {
        println!("cargo:rerun-if-changed={path}");
    }
    Ok(())
}

/// The files whose change means HEAD moved, so that `build_info` names the commit that was built:
/// the HEAD file (a checkout or a switch of branch rewrites it), and when HEAD is a branch, the branch's
/// ref file (a commit rewrites it) and `packed-refs` (where a packed branch lives). Only files that exist
/// are listed (cargo reruns a build script on every build when a listed file is missing); nothing at
/// all outside a git checkout. Paths come from git itself, so linked worktrees work too.
fn git_head_files() -> Vec<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (!text.is_empty()).then_some(text)
    };
    let git_path = |name: &str| git(&["rev-parse", "--path-format=absolute", "--git-path", name]);
    let mut files = Vec::new();
    files.extend(git_path("HEAD"));
    // Detached HEAD: `symbolic-ref` fails and HEAD itself holds the commit.
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        files.extend(git_path(&branch));
        files.extend(git_path("packed-refs"));
    }
    files.retain(|f| std::path::Path::new(f).is_file());
    files
}

/// `git rev-parse --short HEAD`, when git and a checkout are there (an sdist build has neither).
fn git_short_sha() -> Option<String> {
    let out = Command::new("git").args(["rev-parse", "--short", "HEAD"]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let sha = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!sha.is_empty()).then_some(sha)
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`, without a date crate.
fn utc_now_iso8601() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (proleptic Gregorian), valid for any date after 1970.
    let z = days as i64 + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}
