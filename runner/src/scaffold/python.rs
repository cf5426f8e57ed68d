//! A Python scenario project: a module built by componentize-py against
//! a copy of this runner's WIT world, with its Python guest SDK.

use super::{File, WIT};

/// The Python guest SDK (the `runner` package), as this runner has it.
const SDK: &[(&str, &str)] = &[
    (
        "__init__.py",
        include_str!("../../../guest-sdk/python/runner/__init__.py"),
    ),
    (
        "_errors.py",
        include_str!("../../../guest-sdk/python/runner/_errors.py"),
    ),
    (
        "_groups.py",
        include_str!("../../../guest-sdk/python/runner/_groups.py"),
    ),
    (
        "_options.py",
        include_str!("../../../guest-sdk/python/runner/_options.py"),
    ),
    (
        "http.py",
        include_str!("../../../guest-sdk/python/runner/http.py"),
    ),
    (
        "log.py",
        include_str!("../../../guest-sdk/python/runner/log.py"),
    ),
    (
        "metrics.py",
        include_str!("../../../guest-sdk/python/runner/metrics.py"),
    ),
    (
        "mqtt.py",
        include_str!("../../../guest-sdk/python/runner/mqtt.py"),
    ),
    (
        "nats.py",
        include_str!("../../../guest-sdk/python/runner/nats.py"),
    ),
    (
        "vu.py",
        include_str!("../../../guest-sdk/python/runner/vu.py"),
    ),
];

/// The scenario a new project starts from: the repository's example.
const TEMPLATE: &str = include_str!("../../../scenarios/python/hello.py");

/// The componentize-py release the SDK is built and tested with.
pub(crate) const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

/// The build command, run in the project.
pub(crate) const BUILD: &str =
    "componentize-py -d sdk/wit -w load-test componentize -p . -p sdk app -o app.wasm";

/// The files of project `name`, the build command, and the component it
/// makes.
pub(super) fn project(name: &str) -> (Vec<File>, String, String) {
    let mut files = vec![
        File::new("app.py", TEMPLATE.to_owned()),
        File::new("requirements.txt", format!("{COMPONENTIZE_PY}\n")),
        File::new(".gitignore", "/app.wasm\n__pycache__/\n".to_owned()),
        File::new("README.md", readme(name)),
    ];
    files.extend(
        SDK.iter()
            .map(|(p, t)| File::new(&format!("sdk/runner/{p}"), (*t).to_owned())),
    );
    files.extend(
        WIT.iter()
            .map(|(p, t)| File::new(&format!("sdk/wit/{p}"), (*t).to_owned())),
    );
    (files, BUILD.to_owned(), "app.wasm".to_owned())
}

fn readme(name: &str) -> String {
    format!(
        r#"# {name}

A load-test scenario for `runner` in Python, written by `runner new`.

Build it with componentize-py (`pip install -r requirements.txt`):

    {BUILD}

Run it:

    runner run app.wasm --vus 10 --duration 30s -e BASE_URL=http://127.0.0.1:8080

`app.py` reads like a locustfile: `http.get(url)`, `check(name, cond)`,
`sleep(seconds)`, `vu.env(key)`, `metrics`, `with group(...)`, `mqtt`,
`nats`; an uncaught exception fails the iteration, its traceback in the
runner's log. `sdk/` holds the `runner` package and the WIT world of the
runner that wrote this project.
"#
    )
}
