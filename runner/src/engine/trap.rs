//! Naming why a guest call failed: a panic, a limit, a trap of wasm.

use host_api::limits::MemoryCapExceeded;
use host_api::VuState;
use wasmtime::Trap;

/// Why an iteration did not complete normally.
#[derive(Debug)]
pub struct Abort {
    /// Short kind: `panic`, `cpu-limit`, `memory-limit`, ...
    pub kind: &'static str,
    /// One line of detail.
    pub message: String,
}

/// Names the reason for a failed guest call.
pub fn classify(e: &wasmtime::Error, state: &VuState) -> Abort {
    let detail = || {
        let mut parts: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        parts.dedup();
        parts.join(": ").replace('\n', " ")
    };
    if let Some(msg) = &state.panic_message {
        return Abort {
            kind: "panic",
            message: msg.clone(),
        };
    }
    let full = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<wasmtime::component::ResourceTableError>(),
            Some(wasmtime::component::ResourceTableError::Full)
        )
    });
    if full {
        return Abort {
            kind: "resource-limit",
            message: format!(
                "the VU holds {} resource handles (responses, connections, subscriptions, streams) without dropping them",
                host_api::limits::sizes::HANDLES
            ),
        };
    }
    if let Some(m) = e
        .chain()
        .find_map(|c| c.downcast_ref::<host_api::limits::HandlesExceeded>())
    {
        return Abort {
            kind: "resource-limit",
            message: m.to_string(),
        };
    }
    if let Some(m) = e.downcast_ref::<MemoryCapExceeded>() {
        return Abort {
            kind: "memory-limit",
            message: m.to_string(),
        };
    }
    let trap = e
        .chain()
        .find_map(|c| c.downcast_ref::<Trap>())
        .or_else(|| e.downcast_ref::<Trap>());
    let (kind, message) = match trap {
        Some(Trap::Interrupt) if state.budget.mostly_host() => (
            "host-cpu-limit",
            format!(
                "used more than {:?} of CPU in one iteration, most of it in host calls",
                state.budget.limit()
            ),
        ),
        Some(Trap::Interrupt) => (
            "cpu-limit",
            format!(
                "used more than {:?} of CPU in one iteration",
                state.budget.limit()
            ),
        ),
        Some(Trap::OutOfFuel) => ("fuel", "ran out of fuel in one iteration".to_owned()),
        Some(Trap::StackOverflow) => ("stack-overflow", "wasm stack overflow".to_owned()),
        Some(Trap::UnreachableCodeReached) => (
            "unreachable",
            "wasm `unreachable` (an abort without a panic message)".to_owned(),
        ),
        Some(Trap::MemoryOutOfBounds) => (
            "memory-fault",
            "out-of-bounds memory access (a guest stack overflow, or unsafe code)".to_owned(),
        ),
        Some(t) => ("trap", t.to_string()),
        None => ("error", detail()),
    };
    Abort { kind, message }
}
