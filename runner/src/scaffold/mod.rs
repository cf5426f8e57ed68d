//! `runner new`: writes a standalone scenario project anywhere on disk,
//! with the guest SDK and the WIT world of this very runner embedded in
//! it, so the project builds offline from the registry cache and never
//! drifts from the host that runs it.

mod js;
mod python;
mod rust;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The languages a scenario project can be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust, built with `cargo component build --release`.
    Rust,
    /// Python, built with componentize-py.
    Python,
    /// JavaScript (k6-shaped), built with componentize-qjs.
    Js,
}

/// One file of a project: its path in the project, and its text.
pub(crate) struct File {
    pub path: String,
    pub text: String,
}

impl File {
    fn new(path: &str, text: String) -> File {
        File {
            path: path.to_owned(),
            text,
        }
    }
}

/// The WIT world, as this runner's host implements it.
pub(crate) const WIT: &[(&str, &str)] = &[
    ("http.wit", include_str!("../../../wit/http.wit")),
    ("metrics.wit", include_str!("../../../wit/metrics.wit")),
    ("mqtt.wit", include_str!("../../../wit/mqtt.wit")),
    ("nats.wit", include_str!("../../../wit/nats.wit")),
    ("scenario.wit", include_str!("../../../wit/scenario.wit")),
    ("types.wit", include_str!("../../../wit/types.wit")),
    ("vu.wit", include_str!("../../../wit/vu.wit")),
];

/// What `new` made: where, and the commands that build and run it.
#[derive(Debug)]
pub struct Created {
    /// The project's directory.
    pub dir: PathBuf,
    /// The command that builds it, run in `dir`.
    pub build: String,
    /// The component the build makes, relative to `dir`.
    pub component: String,
}

/// Writes a new `lang` project named after the last part of `dir` into
/// `dir`, which must not exist or be empty.
pub fn create(dir: &Path, lang: Lang) -> Result<Created> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    check_name(&name)?;
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .next()
            .is_none();
        if !empty {
            bail!(
                "{} exists and is not empty; choose a new name or directory",
                dir.display()
            );
        }
    }
    let (files, build, component) = match lang {
        Lang::Rust => rust::project(&name),
        Lang::Python => python::project(&name),
        Lang::Js => js::project(&name),
    };
    for f in &files {
        let path = dir.join(&f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, &f.text)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(Created {
        dir: dir.to_owned(),
        build,
        component,
    })
}

/// A name every toolchain takes as a package name: a letter, then
/// letters, digits, `-` or `_`.
fn check_name(name: &str) -> Result<()> {
    let ok = name.len() <= 64
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        bail!(
            "{name:?} is not a scenario name: use a letter, then letters, digits, '-' or '_' (at most 64)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_directories_are_checked() {
        assert!(check_name("shop-test_2").is_ok());
        for bad in ["", "2shop", "my shop", "a/b", "é"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let taken = dir.path().join("shop");
        std::fs::create_dir(&taken).expect("mkdir");
        std::fs::write(taken.join("x"), "").expect("write");
        let e = create(&taken, Lang::Rust).expect_err("not empty");
        assert!(e.to_string().contains("is not empty"), "{e}");
    }

    #[test]
    fn a_rust_project_carries_the_sdk_and_the_wit_of_this_runner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let made = create(&dir.path().join("shop"), Lang::Rust).expect("created");
        let read = |p: &str| std::fs::read_to_string(made.dir.join(p)).expect(p);
        assert!(read("Cargo.toml").contains("name = \"shop\""));
        assert!(read("Cargo.toml").contains("[workspace]"));
        assert_eq!(read("sdk/wit/vu.wit"), include_str!("../../../wit/vu.wit"));
        assert_eq!(
            read("sdk/guest-sdk/src/lib.rs"),
            include_str!("../../../guest-sdk/src/lib.rs")
        );
        assert!(read("sdk/guest-sdk/Cargo.toml").contains("wit-bindgen = \"0."));
        assert!(read("src/lib.rs").contains("guest_sdk::main!(iteration)"));
        assert_eq!(made.component, "target/$WASM_TARGET/release/shop.wasm");
    }

    #[test]
    fn a_python_project_carries_the_sdk_and_the_wit_of_this_runner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let made = create(&dir.path().join("shop"), Lang::Python).expect("created");
        let read = |p: &str| std::fs::read_to_string(made.dir.join(p)).expect(p);
        assert_eq!(
            read("sdk/wit/http.wit"),
            include_str!("../../../wit/http.wit")
        );
        assert!(read("sdk/runner/__init__.py").contains("class Scenario("));
        assert!(read("app.py").contains("def default():"));
        assert!(read("requirements.txt").starts_with("componentize-py=="));
        assert_eq!(made.build, python::BUILD);
        assert_eq!(made.component, "app.wasm");
    }

    #[test]
    fn a_js_project_carries_the_sdk_and_the_wit_of_this_runner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let made = create(&dir.path().join("shop"), Lang::Js).expect("created");
        let read = |p: &str| std::fs::read_to_string(made.dir.join(p)).expect(p);
        assert_eq!(
            read("sdk/wit/nats.wit"),
            include_str!("../../../wit/nats.wit")
        );
        assert!(read("sdk/build.mjs").contains("componentize"));
        assert!(read("app.js").contains("export default function"));
        let package: serde_json::Value =
            serde_json::from_str(&read("package.json")).expect("package.json is JSON");
        assert_eq!(package["name"], "shop");
        assert_eq!(package["devDependencies"]["componentize-qjs"], "0.4.5");
        assert_eq!(made.build, js::BUILD);
    }
}
