//! Write load-test scenarios in Rust for the `runner`.
//!
//! A scenario is a crate built with `cargo component build --release` into a
//! WebAssembly component. Each virtual user (VU) runs it in its own sandbox,
//! calling your entry point once per iteration:
//!
//! ```no_run
//! use guest_sdk::{check, http, sleep, vu};
//! use std::time::Duration;
//!
//! fn iteration() -> guest_sdk::Result {
//!     let base = vu::env("BASE_URL").unwrap_or_else(|| "http://127.0.0.1:8080".into());
//!     let r = http::get(format!("{base}/"))?;
//!     check("status is 200", r.status() == 200);
//!     sleep(Duration::from_millis(100));
//!     Ok(())
//! }
//!
//! guest_sdk::main!(iteration);
//! ```
//!
//! Several VU classes, each with its own count and entry point, are
//! declared by implementing [`Scenario`] and exporting it with
//! [`export_scenario!`].

#![warn(missing_docs)]

pub mod http;
pub mod log;
pub mod metrics;
pub mod vu;

#[doc(hidden)]
#[allow(missing_docs)]
pub mod __bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "load-test",
        pub_export_macro: true,
        export_macro_name: "__export_load_test",
        default_bindings_module: "guest_sdk::__bindings",
    });
}

use __bindings::exports::runner::scenario::scenario as wit;

pub use metrics::check;
pub use vu::sleep;

/// The error type of scenario code: anything that implements
/// `std::error::Error`, or a `String`, converts into it with `?`.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The result of an iteration; an `Err` counts as a failed iteration.
pub type Result<T = (), E = Error> = std::result::Result<T, E>;

/// The scenario's own defaults; `runner run` flags override them.
#[derive(Clone, Debug, Default)]
pub struct Options {
    classes: Vec<(String, u32)>,
    thresholds: Vec<String>,
}

impl Options {
    /// No classes: one class named `default`, one VU unless `--vus` says.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a VU class `name` with `vus` VUs; [`Scenario::run`] receives
    /// the class name.
    pub fn class(mut self, name: impl Into<String>, vus: u32) -> Self {
        self.classes.push((name.into(), vus));
        self
    }

    /// Adds a pass/fail criterion, k6-style: `"http_req_duration p(95)<200ms"`,
    /// `"checks rate>0.99"`, `"errors count<10 abort"`. A failed threshold
    /// makes `runner run` exit with code 99.
    pub fn threshold(mut self, expression: impl Into<String>) -> Self {
        self.thresholds.push(expression.into());
        self
    }
}

/// A scenario with its options and its entry point.
pub trait Scenario {
    /// The scenario's defaults. The default is one class named `default`.
    fn options() -> Options {
        Options::new()
    }

    /// Runs one iteration of a VU of class `class`.
    fn run(class: &str) -> Result;
}

/// Routes a panic's message to the runner before the trap that follows,
/// so the summary shows why the VU stopped.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            __bindings::runner::scenario::vu::panicked(&info.to_string());
        }));
    });
}

#[doc(hidden)]
pub fn __options<S: Scenario>() -> wit::ScenarioOptions {
    install_panic_hook();
    let o = S::options();
    wit::ScenarioOptions {
        classes: o
            .classes
            .into_iter()
            .map(|(name, vus)| wit::VuClass { name, vus })
            .collect(),
        thresholds: o.thresholds,
    }
}

#[doc(hidden)]
pub fn __run<S: Scenario>(class: &str) -> std::result::Result<(), String> {
    install_panic_hook();
    S::run(class).map_err(|e| e.to_string())
}

/// Exports a type implementing [`Scenario`] as the component's entry point.
///
/// ```no_run
/// use guest_sdk::{Options, Scenario};
///
/// struct Shop;
///
/// impl Scenario for Shop {
///     fn options() -> Options {
///         Options::new().class("browser", 80).class("buyer", 20)
///     }
///     fn run(class: &str) -> guest_sdk::Result {
///         match class {
///             "buyer" => Ok(()),
///             _ => Ok(()),
///         }
///     }
/// }
///
/// guest_sdk::export_scenario!(Shop);
/// ```
#[macro_export]
macro_rules! export_scenario {
    ($ty:ty) => {
        const _: () = {
            struct __Export;
            impl $crate::__bindings::exports::runner::scenario::scenario::Guest for __Export {
                fn options(
                ) -> $crate::__bindings::exports::runner::scenario::scenario::ScenarioOptions
                {
                    $crate::__options::<$ty>()
                }
                fn run(
                    class: ::std::string::String,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__run::<$ty>(&class)
                }
            }
    $crate::__bindings::__export_load_test!(__Export with_types_in $crate::__bindings);
        };
    };
}

/// Exports a plain function `fn() -> guest_sdk::Result` as the entry point
/// of a scenario with one VU class.
#[macro_export]
macro_rules! main {
    ($f:path) => {
        const _: () = {
            struct __Main;
            impl $crate::Scenario for __Main {
                fn run(_class: &str) -> $crate::Result {
                    $f()
                }
            }
            $crate::export_scenario!(__Main);
        };
    };
}
