//! Compiles CRIU's RPC schema (proto/rpc.proto, MIT, see proto/ORIGIN.md) with protox,
//! as images-proto does ours: no system `protoc` needed.

fn main() {
    println!("cargo:rerun-if-changed=proto/rpc.proto");
    let fds = protox::compile(["proto/rpc.proto"], ["proto"]).expect("compile proto/rpc.proto");
    prost_build::Config::new()
        .compile_fds(fds)
        .expect("generate Rust types from proto/rpc.proto");
}
