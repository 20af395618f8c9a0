//! Compiles the `.proto` contracts with `protox` (pure Rust, no `protoc` needed) into prost
//! message types plus pbjson serde impls (proto3 canonical JSON, as Connect's JSON codec needs).

use std::{env, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &["envd/process.proto", "envd/filesystem.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(env::var("OUT_DIR")?);
    for p in PROTOS {
        println!("cargo:rerun-if-changed=proto/{p}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    let descriptor_path = out.join("descriptors.bin");
    std::fs::write(&descriptor_path, fds.encode_to_vec())?;

    prost_build::Config::new()
        .compile_well_known_types()
        .extern_path(".google.protobuf.Timestamp", "crate::wkt::Timestamp")
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(fds)?;

    let descriptors = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .extern_path(".google.protobuf.Timestamp", "crate::wkt::Timestamp")
        .build(&[".process", ".filesystem"])?;

    // agent.v1 (gRPC, tonic) only for the crates that ask for it: envd stays small.
    if env::var_os("CARGO_FEATURE_AGENT").is_some() {
        const AGENT: &[&str] = &["agent/v1/agent.proto"];
        for p in AGENT {
            println!("cargo:rerun-if-changed=proto/{p}");
        }
        let fds = protox::compile(AGENT, ["proto"])?;
        tonic_prost_build::configure().compile_fds(fds)?;
    }
    Ok(())
}
