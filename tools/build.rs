//! No build step of our own: this script exists so that the `protoc-bin-vendored`
//! build-dependency (see Cargo.toml and tools/protoc-shim) is part of the build graph.
fn main() {}
