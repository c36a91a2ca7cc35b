//! Compiles the image schema with protox (pure Rust), so building needs no system `protoc`.

fn main() {
    println!("cargo:rerun-if-changed=proto/ckpt.proto");
    let fds = protox::compile(["proto/ckpt.proto"], ["proto"]).expect("compile proto/ckpt.proto");
    let mut config = prost_build::Config::new();
    config.type_attribute(".", "#[derive(serde::Serialize)]");
    config
        .compile_fds(fds)
        .expect("generate Rust types from proto/ckpt.proto");
}
