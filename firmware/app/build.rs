//! Puts `memory.x` on the linker search path and passes the cortex-m-rt
//! (and, with the `defmt` feature, defmt) linker scripts.
//!
//! This is done here rather than in `.cargo/config.toml` because cargo only
//! reads the config of the directory it is started from: the CI builds with
//! `--manifest-path firmware/app/Cargo.toml` from the repository root.

use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(out.join("memory.x"), include_bytes!("memory.x")).expect("write memory.x to OUT_DIR");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");

    // Only for the firmware target: `cargo check` on the host must not get
    // ARM linker scripts.
    if env::var("TARGET").is_ok_and(|t| t.starts_with("thumb")) {
        println!("cargo:rustc-link-arg-bins=--nmagic");
        println!("cargo:rustc-link-arg-bins=-Tlink.x");
        if env::var_os("CARGO_FEATURE_DEFMT").is_some() {
            println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
        }
    }
}
