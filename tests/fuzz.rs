//! The fuzz targets' checks under the bounded deterministic engine (see
//! `fuzz/lib.rs`; the same checks run under libFuzzer with
//! `scripts/fuzz.sh`).

#[path = "fuzz/lib.rs"]
mod checks;
