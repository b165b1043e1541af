//! Compiles proto/callkpi/v1 into Rust with protox (a pure-Rust protobuf
//! compiler: no system `protoc`) and tonic-prost-build, and writes the
//! encoded file descriptor set for gRPC reflection.

use std::{env, fs, io, path::PathBuf};

use protox::prost::Message as _;

/// The contract, relative to the include root.
const PROTOS: &[&str] = &["callkpi/v1/events.proto", "callkpi/v1/ingest.proto", "callkpi/v1/reports.proto"];

/// Include root, relative to this crate.
const PROTO_ROOT: &str = "../../proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={PROTO_ROOT}/{proto}");
    }

    // Source info is kept so that proto comments become rustdoc and so that
    // reflection clients see them.
    let fds = protox::compile(PROTOS, [PROTO_ROOT])?;

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| io::Error::other("OUT_DIR unset"))?);
    fs::write(out_dir.join("callkpi_v1_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // No `connect` helper: it needs tonic's "transport" feature, which
        // only the binaries enable. Clients are built from a Channel.
        .build_transport(false)
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    Ok(())
}
