//! Loading a scenario: checking the bytes are a component of our world,
//! compiling and linking it, with one clear sentence for every failure.

use anyhow::{bail, Context, Result};
use host_api::{LoadTestPre, VuState};
use wasmtime::component::{Component, Linker};
use wasmtime::Engine;

use super::{EngineSettings, MAX_MEMORIES_PER_VU};

/// A compiled, checked scenario component.
pub struct Scenario {
    /// The compiled component.
    pub component: Component,
    /// Size of the component file, bytes.
    pub size: u64,
    /// SHA-256 of the component's bytes, lower-case hex.
    pub sha256: String,
    /// Whether it imports a networking interface (and may hold sockets).
    pub uses_network: bool,
    /// Core instances one instantiation creates (the module, a WASI
    /// adapter, shims; an interpreter's several).
    pub core_instances: u32,
    /// Tables one instantiation creates.
    pub tables: u32,
    /// Linear memories one instantiation creates.
    pub memories: u32,
}

const WASM_MAGIC: [u8; 4] = *b"\0asm";
const CORE_VERSION: [u8; 4] = [1, 0, 0, 0];

/// Checks, compiles and links the component `bytes`, known as `shown` (a
/// file name). Every failure is one clear sentence naming it and what to do.
pub fn load(
    engine: &Engine,
    shown: &str,
    bytes: &[u8],
    settings: &EngineSettings,
) -> Result<Scenario> {
    if bytes.len() < 8 || bytes[..4] != WASM_MAGIC {
        bail!("{shown} is not a WebAssembly file; build a scenario with `cargo component build --release`");
    }
    if bytes[4..8] == CORE_VERSION {
        bail!(
            "{shown} is a core WebAssembly module, not a component; build it with `cargo component build --release` \
             (or wrap it with `wasm-tools component new`)"
        );
    }
    let component = Component::new(engine, bytes).map_err(|e| {
        anyhow::anyhow!(
            "{shown} is not a valid WebAssembly component: {}",
            root_message(&e.into())
        )
    })?;
    let core_instances = core_instances(bytes);
    if core_instances > settings.core_instances {
        bail!(
            "{shown} creates {core_instances} core instances per VU; raise --instance-limit (now {}) to at least {core_instances}",
            settings.core_instances
        );
    }
    let (mut tables, mut memories) = (1, MAX_MEMORIES_PER_VU);
    if let Some(r) = component.resources_required() {
        tables = r.num_tables.max(1);
        memories = r.num_memories.max(1);
        if r.num_memories > MAX_MEMORIES_PER_VU {
            bail!(
                "{shown} needs {} memories per instance; the runner allows {MAX_MEMORIES_PER_VU}",
                r.num_memories
            );
        }
        if r.num_memories > settings.memories {
            // Only when swapping: the run's pool was sized for the
            // component it started with.
            bail!(
                "{shown} needs {} memories per VU; this run's pool holds {} (built for the \
                 scenario it started with: build both for the same wasm target)",
                r.num_memories,
                settings.memories
            );
        }
        if r.num_tables > settings.tables {
            bail!(
                "{shown} needs {} tables per instance; raise --table-limit to at least that",
                r.num_tables
            );
        }
    }
    // Link once here so a component for another world fails now, not in
    // every VU.
    link(engine, &component, shown)?;
    let uses_network = component.component_type().imports(engine).any(|(name, _)| {
        ["http", "mqtt", "nats"]
            .iter()
            .any(|i| name.starts_with(&format!("runner:scenario/{i}")))
    });
    Ok(Scenario {
        component,
        size: bytes.len() as u64,
        sha256: sha256_hex(bytes),
        uses_network,
        core_instances,
        tables,
        memories,
    })
}

/// The core instances a component's instantiation creates, counted from
/// its instantiations (nested components included), so the pool is sized
/// for what this component needs rather than for a guess.
fn core_instances(bytes: &[u8]) -> u32 {
    let mut n = 0u32;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload {
            Ok(wasmparser::Payload::InstanceSection(reader)) => {
                for instance in reader.into_iter().flatten() {
                    if matches!(instance, wasmparser::Instance::Instantiate { .. }) {
                        n = n.saturating_add(1);
                    }
                }
            }
            // Calls between nested components go through adapter modules
            // that wasmtime generates and instantiates itself: allow one
            // per nested instantiation (an upper bound in practice).
            Ok(wasmparser::Payload::ComponentInstanceSection(reader)) => {
                for instance in reader.into_iter().flatten() {
                    if matches!(instance, wasmparser::ComponentInstance::Instantiate { .. }) {
                        n = n.saturating_add(1);
                    }
                }
            }
            _ => {}
        }
    }
    n.max(1)
}

/// SHA-256 of `bytes`, lower-case hex: how runs name their components.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Links `component` (known as `shown`) against the host's imports and
/// pre-instantiates it.
pub fn link(engine: &Engine, component: &Component, shown: &str) -> Result<LoadTestPre<VuState>> {
    let mut linker: Linker<VuState> = Linker::new(engine);
    host_api::add_to_linker(&mut linker).map_err(anyhow::Error::from)?;
    let pre = linker.instantiate_pre(component).map_err(|e| {
        anyhow::anyhow!(
            "{shown} does not fit the {} world: {}; rebuild it against this runner's wit/ (guest-sdk)",
            host_api::WIT_PACKAGE,
            root_message(&e.into())
        )
    })?;
    let pre = LoadTestPre::new(pre).map_err(|e| {
        anyhow::anyhow!(
            "{shown} does not export the {} scenario interface: {}; export it with guest_sdk::export_scenario!",
            host_api::WIT_PACKAGE,
            root_message(&e.into())
        )
    })?;
    Ok(pre)
}

/// Moves a component compiled by one engine into another with the same
/// code-generation settings, without compiling it again.
pub fn transfer(component: &Component, to: &Engine) -> Result<Component> {
    let bytes = component.serialize().map_err(anyhow::Error::from)?;
    // SAFETY: the bytes were produced just above by wasmtime's own
    // serializer, and wasmtime checks they match the target engine.
    unsafe { Component::deserialize(to, &bytes) }
        .map_err(anyhow::Error::from)
        .context("cannot move the compiled scenario into the pooled engine")
}

/// The most specific message of an error chain, on one line.
pub fn root_message(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    parts.dedup();
    parts.join(": ").replace('\n', " ")
}

/// Bytes of data segments in a component's core modules: what its
/// memories start with.
pub(crate) fn initial_data_bytes(bytes: &[u8]) -> u64 {
    let mut n = 0u64;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        if let Ok(wasmparser::Payload::DataSection(reader)) = payload {
            for data in reader.into_iter().flatten() {
                n = n.saturating_add(data.data.len() as u64);
            }
        }
    }
    n
}

/// Elements of all tables a component's core modules define, at their
/// initial sizes.
pub(crate) fn initial_table_elements(bytes: &[u8]) -> u64 {
    let mut n = 0u64;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        if let Ok(wasmparser::Payload::TableSection(reader)) = payload {
            for table in reader.into_iter().flatten() {
                n = n.saturating_add(table.ty.initial);
            }
        }
    }
    n
}

/// The largest initial linear memory among a component's core modules,
/// bytes: what each VU starts with.
pub fn initial_memory_bytes(bytes: &[u8]) -> u64 {
    let mut largest = 0u64;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        if let Ok(wasmparser::Payload::MemorySection(reader)) = payload {
            for memory in reader.into_iter().flatten() {
                let page = 1u64 << memory.page_size_log2.unwrap_or(16);
                largest = largest.max(memory.initial.saturating_mul(page));
            }
        }
    }
    largest
}

/// The memory limit a VU gets when none is given: twice the component's
/// initial memory (room for an interpreter's heap to grow), at least
/// `floor`, in whole MiB.
pub fn memory_limit_for(bytes: &[u8], floor: u64) -> u64 {
    let want = initial_memory_bytes(bytes).saturating_mul(2);
    want.div_ceil(1 << 20).saturating_mul(1 << 20).max(floor)
}

/// The language and toolchain a component was built with, when its
/// metadata or module names tell: `Python 3.14 (componentize-py)`,
/// `JavaScript (componentize-js)`, `Rust (wasip1 adapter)`...
pub fn guest_language(bytes: &[u8]) -> Option<String> {
    let mut languages: Vec<String> = Vec::new();
    let mut processed: Vec<String> = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let Ok(wasmparser::Payload::CustomSection(c)) = payload else {
            continue;
        };
        let wasmparser::KnownCustom::Producers(reader) = c.as_known() else {
            continue;
        };
        for field in reader.into_iter().flatten() {
            let into = match field.name {
                "language" => &mut languages,
                "processed-by" => &mut processed,
                _ => continue,
            };
            for v in field.values.into_iter().flatten() {
                if !into.iter().any(|n| n == v.name) {
                    into.push(v.name.to_owned());
                }
            }
        }
    }
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    const PYTHON: &[u8] = b"libpython3.";
    if let Some(at) = bytes.windows(PYTHON.len()).position(|w| w == PYTHON) {
        let minor: String = bytes[at + PYTHON.len()..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .map(|&b| char::from(b))
            .collect();
        return Some(format!("Python 3.{minor} (componentize-py)"));
    }
    if has(b"componentize_qjs") || has(b"componentize-qjs") {
        return Some("JavaScript (QuickJS, componentize-qjs)".to_owned());
    }
    if has(b"StarlingMonkey")
        || has(b"starlingmonkey")
        || processed.iter().any(|p| p.contains("ComponentizeJS"))
    {
        return Some("JavaScript (componentize-js)".to_owned());
    }
    // A wasm32-wasip2 build with `strip` keeps no language field, only
    // the tools that processed it.
    let language = match languages.first() {
        Some(l) => l.clone(),
        None if processed.iter().any(|p| p == "wit-bindgen-rust") => "Rust".to_owned(),
        None => return None,
    };
    let adapter = has(b"wit-component:adapter:wasi_snapshot_preview1");
    Some(if adapter {
        format!("{language} (wasip1 adapter)")
    } else {
        language
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A core module with one memory of `pages` 64 KiB pages.
    fn module_with_memory(pages: u32) -> Vec<u8> {
        let mut leb = Vec::new();
        let mut n = pages;
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                leb.push(byte);
                break;
            }
            leb.push(byte | 0x80);
        }
        let mut section = vec![1u8, 0x00]; // one memory, no maximum
        section.extend_from_slice(&leb);
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        m.push(5); // the memory section
        m.push(section.len() as u8);
        m.extend_from_slice(&section);
        m
    }

    #[test]
    fn the_memory_limit_is_sized_from_the_initial_memory() {
        let floor = 32 << 20;
        assert_eq!(initial_memory_bytes(&module_with_memory(1)), 64 << 10);
        assert_eq!(memory_limit_for(&module_with_memory(1), floor), floor);
        // 25 MiB to start: a limit of twice that.
        let big = module_with_memory(400);
        assert_eq!(initial_memory_bytes(&big), 25 << 20);
        assert_eq!(memory_limit_for(&big, floor), 50 << 20);
    }
}
