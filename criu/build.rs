//! Compiles CRIU's schemas with protox, as images-proto does ours: no system `protoc`
//! needed. proto/rpc.proto is the RPC (`criu swrk`); proto/images/ holds the image
//! records the tools around CRIU read (inventory, pstree, core, stats). Both are MIT, see
//! proto/ORIGIN.md. Neither has a package, so each goes to a directory of its own.

fn main() {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["proto/rpc.proto"], ["proto"]).expect("compile proto/rpc.proto");
    prost_build::Config::new()
        .compile_fds(fds)
        .expect("generate Rust types from proto/rpc.proto");

    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("images");
    std::fs::create_dir_all(&out).expect("make OUT_DIR/images");
    let images = [
        "inventory.proto",
        "pstree.proto",
        "core.proto",
        "stats.proto",
    ];
    let fds = protox::compile(images, ["proto/images"]).expect("compile proto/images");
    prost_build::Config::new()
        .out_dir(&out)
        .compile_fds(fds)
        .expect("generate Rust types from proto/images");
}
