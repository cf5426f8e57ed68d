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
pub mod mqtt;
pub mod nats;
pub mod random;
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

use std::time::Duration;

pub use metrics::check;
pub use vu::sleep;

/// `payload` with a send timestamp in front (12 bytes: a marker and the
/// wall-clock time). The host reads it on receipt and records the message's
/// end-to-end latency (`mqtt_message_latency`, `nats_message_latency`);
/// [`mqtt::Message::latency`] and [`nats::Message::latency`] return it.
/// Use [`unstamp`] to get the payload back.
pub fn stamp(payload: impl AsRef<[u8]>) -> Vec<u8> {
    let payload = payload.as_ref();
    let mut out = Vec::with_capacity(12 + payload.len());
    out.extend_from_slice(b"LTs\x01");
    out.extend_from_slice(&__bindings::runner::scenario::vu::unix_time().to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload of a message made with [`stamp`], without its timestamp;
/// other payloads unchanged.
pub fn unstamp(payload: &[u8]) -> &[u8] {
    match payload.strip_prefix(b"LTs\x01") {
        Some(rest) if rest.len() >= 8 => &rest[8..],
        _ => payload,
    }
}

/// The error type of scenario code: anything that implements
/// `std::error::Error`, or a `String`, converts into it with `?`.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The result of an iteration; an `Err` counts as a failed iteration.
pub type Result<T = (), E = Error> = std::result::Result<T, E>;

/// The scenario's own defaults; `runner run` flags override them.
#[derive(Clone, Debug, Default)]
pub struct Options {
    classes: Vec<Class>,
    thresholds: Vec<String>,
    duration: Option<Duration>,
}

/// A VU class: a name (passed to [`Scenario::run`]), a VU count and a load
/// model. Closed model by default: each VU iterates in a loop.
#[derive(Clone, Debug)]
pub struct Class(wit::VuClass);

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Class {
    /// A class `name` of `vus` VUs.
    pub fn new(name: impl Into<String>, vus: u32) -> Self {
        Self(wit::VuClass {
            name: name.into(),
            vus,
            rate: None,
            max_vus: None,
            stages: Vec::new(),
            start_rate: None,
            poisson_start: false,
            think_time: None,
            pacing: None,
            iterations: None,
            env: Vec::new(),
        })
    }

    /// Open model: start `per_second` iterations per second whatever the
    /// target's speed; `vus` are allocated up front.
    pub fn rate(mut self, per_second: f64) -> Self {
        self.0.rate = Some(per_second);
        self
    }

    /// Open model: the most VUs the class may grow to.
    pub fn max_vus(mut self, n: u32) -> Self {
        self.0.max_vus = Some(n);
        self
    }

    /// Adds a ramp stage: reach `target` running VUs (or arrivals per
    /// second, with [`Class::rate`]) linearly over `duration`.
    pub fn stage(mut self, duration: Duration, target: f64) -> Self {
        self.0.stages.push(wit::Stage {
            duration: nanos(duration),
            target,
        });
        self
    }

    /// Start `per_second` VUs per second, evenly spaced.
    pub fn start_rate(mut self, per_second: f64) -> Self {
        self.0.start_rate = Some(per_second);
        self.0.poisson_start = false;
        self
    }

    /// Start VUs at Poisson-distributed times, `per_second` on average.
    pub fn poisson_start(mut self, per_second: f64) -> Self {
        self.0.start_rate = Some(per_second);
        self.0.poisson_start = true;
        self
    }

    /// Pause this long after each iteration.
    pub fn think_time(mut self, time: Duration) -> Self {
        self.0.think_time = Some(nanos(time));
        self
    }

    /// Start iterations at least this far apart (constant pacing).
    pub fn pacing(mut self, period: Duration) -> Self {
        self.0.pacing = Some(nanos(period));
        self
    }

    /// Run this many iterations per VU.
    pub fn iterations(mut self, n: u64) -> Self {
        self.0.iterations = Some(n);
        self
    }

    /// A value this class's VUs read with [`vu::env`], over `-e` values.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.env.push((key.into(), value.into()));
        self
    }
}

impl Options {
    /// No classes: one class named `default`, one VU unless `--vus` says.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a VU class `name` with `vus` VUs; [`Scenario::run`] receives
    /// the class name.
    pub fn class(self, name: impl Into<String>, vus: u32) -> Self {
        self.with_class(Class::new(name, vus))
    }

    /// Adds a VU class with its own load model.
    pub fn with_class(mut self, class: Class) -> Self {
        self.classes.push(class);
        self
    }

    /// How long the run lasts, unless `--duration` says otherwise.
    pub fn duration(mut self, time: Duration) -> Self {
        self.duration = Some(time);
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

thread_local! {
    static GROUP: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` inside the group `name`, as k6's `group` does: its requests,
/// checks and custom metrics are tagged `group=name`, so the summary shows
/// them together, and the time `f` took is recorded as the timing
/// `group_duration{group=name}`. Groups nest as `outer::inner`.
pub fn group<T>(name: &str, f: impl FnOnce() -> T) -> T {
    let full = GROUP.with(|g| match g.borrow().as_deref() {
        Some(outer) => format!("{outer}::{name}"),
        None => name.to_owned(),
    });
    let previous = GROUP.with(|g| g.borrow_mut().replace(full.clone()));
    let started = vu::now();
    let out = f();
    let took = vu::now().saturating_sub(started);
    GROUP.with(|g| *g.borrow_mut() = previous);
    metrics::timing_tagged("group_duration", took, &[("group", &full)]);
    out
}

pub(crate) fn current_group() -> Option<String> {
    GROUP.with(|g| g.borrow().clone())
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
        classes: o.classes.into_iter().map(|c| c.0).collect(),
        thresholds: o.thresholds,
        duration: o.duration.map(nanos),
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
