//! Links libvosk.so from the project's `libvosk/` folder (fetched by `make libvosk` from the
//! PyPI wheel vosk==0.3.45) and records an rpath, so the binary, the tests and the benches
//! run without LD_LIBRARY_PATH. `ASR_BRIDGE_LIBVOSK_DIR` points elsewhere (e.g. an install).

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=ASR_BRIDGE_LIBVOSK_DIR");
    let dir = match std::env::var_os("ASR_BRIDGE_LIBVOSK_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("libvosk"),
    };
    let so = dir.join("libvosk.so");
    println!("cargo:rerun-if-changed={}", so.display());
    if !so.is_file() {
        panic!("libvosk.so not found at {}: run `make libvosk` first (it fetches the PyPI wheel vosk==0.3.45)", so.display());
    }
    println!("cargo:rustc-link-search=native={}", dir.display());
    // $ORIGIN first: an installed binary finds libvosk beside itself (or in ../lib).
    println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN:$ORIGIN/../lib/asr_bridge:{}", dir.display());
}
