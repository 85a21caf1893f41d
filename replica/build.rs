//! Compiles proto/meridian.proto with protox (a protobuf compiler in Rust): no protoc needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/meridian.proto");
    let fds = protox::compile(["proto/meridian.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
