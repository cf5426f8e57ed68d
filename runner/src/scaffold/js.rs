//! A JavaScript scenario project: a k6-shaped script bundled with this
//! runner's JavaScript guest SDK and made a component by componentize-qjs
//! (QuickJS), against a copy of this runner's WIT world.

use super::{File, WIT};

/// The JavaScript guest SDK (imported as `runner`, `runner/http`, ...) and
/// its build script, as this runner has them.
const SDK: &[(&str, &str)] = &[
    ("index.js", include_str!("../../../guest-sdk/js/index.js")),
    ("_core.js", include_str!("../../../guest-sdk/js/_core.js")),
    (
        "_scenario.js",
        include_str!("../../../guest-sdk/js/_scenario.js"),
    ),
    ("http.js", include_str!("../../../guest-sdk/js/http.js")),
    (
        "metrics.js",
        include_str!("../../../guest-sdk/js/metrics.js"),
    ),
    ("mqtt.js", include_str!("../../../guest-sdk/js/mqtt.js")),
    ("nats.js", include_str!("../../../guest-sdk/js/nats.js")),
    ("build.mjs", include_str!("../../../guest-sdk/js/build.mjs")),
];

/// The scenario a new project starts from: the repository's example.
const TEMPLATE: &str = include_str!("../../../scenarios/js/hello.js");

/// The build tools, pinned to the releases the SDK is built and tested with.
pub(crate) const TOOLS: &[(&str, &str)] = &[("componentize-qjs", "0.4.5"), ("esbuild", "0.28.2")];

/// The build command, run in the project.
pub(crate) const BUILD: &str = "npm install && npm run build";

/// The files of project `name`, the build command, and the component it
/// makes.
pub(super) fn project(name: &str) -> (Vec<File>, String, String) {
    let mut files = vec![
        File::new("app.js", TEMPLATE.to_owned()),
        File::new("package.json", package_json(name)),
        File::new(".gitignore", "/app.wasm\n/node_modules/\n".to_owned()),
        File::new("README.md", readme(name)),
    ];
    files.extend(
        SDK.iter()
            .map(|(p, t)| File::new(&format!("sdk/{p}"), (*t).to_owned())),
    );
    files.extend(
        WIT.iter()
            .map(|(p, t)| File::new(&format!("sdk/wit/{p}"), (*t).to_owned())),
    );
    (files, BUILD.to_owned(), "app.wasm".to_owned())
}

fn package_json(name: &str) -> String {
    let tools: Vec<String> = TOOLS
        .iter()
        .map(|(t, v)| format!("    \"{t}\": \"{v}\""))
        .collect();
    format!(
        r#"{{
  "name": "{name}",
  "private": true,
  "type": "module",
  "scripts": {{
    "build": "node sdk/build.mjs app.js -o app.wasm"
  }},
  "devDependencies": {{
{}
  }}
}}
"#,
        tools.join(",\n")
    )
}

fn readme(name: &str) -> String {
    format!(
        r#"# {name}

A load-test scenario for `runner` in JavaScript, written by `runner new`.

Build it (Node.js 18 or later; `npm install` fetches the build tools once):

    {BUILD}

Run it:

    runner run app.wasm --vus 10 --duration 30s -e BASE_URL=http://127.0.0.1:8080

`app.js` reads like a k6 script: `import http from 'runner/http'`,
`import {{ check, group, sleep }} from 'runner'`, `export const options`
(vus, duration, iterations, stages, scenarios with the k6 executors,
thresholds), `export default function`, `__ENV`, `__VU`, `__ITER`,
`console.log`, and `runner/metrics` (Counter, Gauge, Rate, Trend),
`runner/mqtt`, `runner/nats`. An uncaught exception fails the iteration,
its stack in the runner's log. Calls are synchronous: a request suspends
only its own VU. `sdk/` holds the SDK, its build script and the WIT world
of the runner that wrote this project.
"#
    )
}
