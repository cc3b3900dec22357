//! Compiles proto/dataplane.proto without a system `protoc` (protox parses it in Rust).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/dataplane.proto");
    println!("cargo:rerun-if-changed=build.rs");
    let fds = protox::compile(["proto/dataplane.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
