//! A Rust scenario project: a crate built by `cargo component build`,
//! depending on a copy of this runner's guest SDK.

use super::{File, WIT};

/// The guest SDK's sources, as this runner was built with them.
const SDK: &[(&str, &str)] = &[
    ("lib.rs", include_str!("../../../guest-sdk/src/lib.rs")),
    ("http.rs", include_str!("../../../guest-sdk/src/http.rs")),
    ("log.rs", include_str!("../../../guest-sdk/src/log.rs")),
    (
        "metrics.rs",
        include_str!("../../../guest-sdk/src/metrics.rs"),
    ),
    ("mqtt.rs", include_str!("../../../guest-sdk/src/mqtt.rs")),
    ("nats.rs", include_str!("../../../guest-sdk/src/nats.rs")),
    (
        "random.rs",
        include_str!("../../../guest-sdk/src/random.rs"),
    ),
    ("vu.rs", include_str!("../../../guest-sdk/src/vu.rs")),
];

/// The workspace manifest, for the wit-bindgen version the SDK is built
/// with.
const WORKSPACE: &str = include_str!("../../../Cargo.toml");

/// The scenario a new project starts from: the repository's template.
const TEMPLATE: &str = include_str!("../../../scenarios/template/src/lib.rs");

/// Chooses the wasm toolchain (rustup's target, or Debian's Rust building
/// std itself): the repository's own script.
const WASM_ENV: &str = include_str!("../../../scripts/wasm-env.sh");

/// The files of project `name`, the build command, and the component it
/// makes.
pub(super) fn project(name: &str) -> (Vec<File>, String, String) {
    let mut files = vec![
        File::new("Cargo.toml", manifest(name)),
        File::new("src/lib.rs", TEMPLATE.to_owned()),
        File::new("sdk/guest-sdk/Cargo.toml", sdk_manifest()),
        File::new("wasm-env.sh", WASM_ENV.to_owned()),
        File::new(".gitignore", "/target/\n".to_owned()),
        File::new("README.md", readme(name)),
    ];
    files.extend(
        SDK.iter()
            .map(|(p, t)| File::new(&format!("sdk/guest-sdk/src/{p}"), (*t).to_owned())),
    );
    files.extend(
        WIT.iter()
            .map(|(p, t)| File::new(&format!("sdk/wit/{p}"), (*t).to_owned())),
    );
    (
        files,
        // `wasm-env.sh` sets the target: wasip2, or wasip1 on the Debian
        // fallback.
        "cargo component build --release --target $WASM_TARGET".to_owned(),
        format!(
            "target/$WASM_TARGET/release/{}.wasm",
            name.replace('-', "_")
        ),
    )
}

fn manifest(name: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"

[lib]
crate-type = ["cdylib"]

[dependencies]
# This runner's guest SDK and WIT world, written by `runner new`.
guest-sdk = {{ path = "sdk/guest-sdk" }}

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
panic = "abort"
strip = true

# A project of its own, even inside another workspace.
[workspace]
"#
    )
}

fn sdk_manifest() -> String {
    format!(
        r#"[package]
name = "guest-sdk"
version = "{}"
edition = "2021"
license = "Apache-2.0"
description = "The runner's guest SDK, as the runner that wrote this project has it."

[dependencies]
wit-bindgen = "{}"
"#,
        env!("CARGO_PKG_VERSION"),
        wit_bindgen_version()
    )
}

/// The version requirement of wit-bindgen in the workspace manifest.
fn wit_bindgen_version() -> &'static str {
    WORKSPACE
        .lines()
        .find_map(|l| l.trim().strip_prefix("wit-bindgen = \""))
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("0.61")
}

fn readme(name: &str) -> String {
    let crate_name = name.replace('-', "_");
    format!(
        r#"# {name}

A load-test scenario for `runner`, written by `runner new`.

Build it (`wasm-env.sh` picks the wasm toolchain and sets `$WASM_TARGET`:
rustup's `wasm32-wasip2` target, or Debian's Rust building std itself for
`wasm32-wasip1`):

    . ./wasm-env.sh && cargo component build --release --target $WASM_TARGET

Run it (in the same shell, where `$WASM_TARGET` is set):

    runner run target/$WASM_TARGET/release/{crate_name}.wasm --vus 10 --duration 30s -e BASE_URL=http://127.0.0.1:8080

`sdk/` holds the guest SDK and the WIT world of the runner that wrote this
project; `runner new` in a newer runner writes newer ones.
"#
    )
}
