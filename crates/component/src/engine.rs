//! The wasmtime engine (pooling allocator, fuel, async), compiling components once, and the
//! cache of loaded components.
//!
//! `Component::deserialize` is `unsafe` in wasmtime (it maps bytes as machine code, so they
//! must come from a trusted compile), and this workspace forbids `unsafe`. So an artifact
//! is not machine code: it is the validated component bytes behind a header with their
//! SHA-256 digest. Loading one is free when the digest is in the in-memory cache; otherwise
//! the component is compiled again through wasmtime's own on-disk code cache (the `cache`
//! feature, `Settings::cache_dir`), which wasmtime keys by the bytes, the compiler and its
//! settings, and reads back itself. A restart therefore costs a disk read per component,
//! not a compile, and nothing in this crate ever maps bytes it did not compile.

use crate::bindings::{Agent, AgentPre};
use crate::error::ComponentError;
use crate::state::State;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How the engine is sized. The defaults suit a server; tests use smaller pools.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Instances alive at once (slots of the pooling allocator); a run beyond them fails
    /// with `busy`. Each slot reserves address space, not memory.
    pub max_instances: u32,
    /// The largest `memory_mb` a run may be given (also the pool's per-memory maximum).
    pub max_memory_mb: u32,
    /// Fuel per millisecond of `cpu_ms`: how many WebAssembly operations one millisecond of
    /// CPU buys. Calibrated on the reference machine by `bench/sandbox/component`.
    pub fuel_per_ms: u64,
    /// Where wasmtime keeps compiled code between restarts; `None` keeps it in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Loaded components kept in memory (least recently used ones are dropped).
    pub max_loaded: usize,
    /// Per-run caps on what the imports accept.
    pub max_log_lines: u32,
    pub max_log_line_bytes: usize,
    pub max_kv_key_bytes: usize,
    pub max_kv_value_bytes: usize,
    pub max_http_body_bytes: usize,
    /// Bytes of stdout and of stderr kept per run (the rest is dropped).
    pub max_captured_output_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_instances: 1000,
            max_memory_mb: 4096,
            fuel_per_ms: DEFAULT_FUEL_PER_MS,
            cache_dir: None,
            max_loaded: 256,
            max_log_lines: 1000,
            max_log_line_bytes: 8 * 1024,
            max_kv_key_bytes: 512,
            max_kv_value_bytes: 1024 * 1024,
            max_http_body_bytes: 8 * 1024 * 1024,
            max_captured_output_bytes: 64 * 1024,
        }
    }
}

/// Measured by `bench/sandbox/component` on the 2-core reference machine: a tight loop,
/// sorting, and string building use 16 to 23 million fuel (WebAssembly operations) per
/// millisecond of CPU, so `cpu_ms` is close to real CPU time for such code (within about
/// 20 %; code whose operations are slower, such as an interpreter's, gets more time).
pub const DEFAULT_FUEL_PER_MS: u64 = 20_000_000;

/// Core instances, memories and tables one component may create (a Rust component has
/// one memory and a few core instances; an interpreter such as componentize-py's more).
const CORE_INSTANCES_PER_COMPONENT: u32 = 32;
const MEMORIES_PER_COMPONENT: u32 = 4;
const TABLES_PER_COMPONENT: u32 = 8;

/// The component host. Cheap to clone; one per process.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    engine: wasmtime::Engine,
    linker: Linker<State>,
    settings: Arc<Settings>,
    loaded: Mutex<Lru>,
}

/// A compiled component, linked and ready to instantiate. Cheap to clone.
#[derive(Clone)]
pub struct Loaded {
    pub(crate) pre: AgentPre<State>,
    pub(crate) settings: Arc<Settings>,
    digest: [u8; 32],
}

impl Loaded {
    /// The SHA-256 of the component's bytes, hex.
    pub fn digest(&self) -> String {
        hex::encode(self.digest)
    }
}

const MAGIC: &[u8; 8] = b"BERTHWC1";

impl Engine {
    pub fn new(settings: Settings) -> Result<Engine, ComponentError> {
        let fail = |what: &str, e: wasmtime::Error| {
            ComponentError::invalid(format!("cannot start the component engine: {what}: {e}"))
        };
        let n = settings.max_instances.max(1);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(4))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(2))
            .total_stacks(n)
            .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
            .max_memories_per_component(MEMORIES_PER_COMPONENT)
            .max_tables_per_component(TABLES_PER_COMPONENT)
            .max_memory_size(usize::try_from(settings.max_memory_mb).unwrap_or(4096) << 20)
            .table_elements(100_000);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .consume_fuel(true)
            .wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Disable)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if let Some(dir) = &settings.cache_dir {
            let mut cache = wasmtime::CacheConfig::new();
            cache.with_directory(dir);
            let cache = wasmtime::Cache::new(cache).map_err(|e| fail("code cache", e))?;
            config.cache(Some(cache));
        }
        let engine = wasmtime::Engine::new(&config).map_err(|e| fail("wasmtime", e))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| fail("wasi", e))?;
        Agent::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
            .map_err(|e| fail("imports", e))?;
        let loaded = Mutex::new(Lru::new(settings.max_loaded.max(1)));
        Ok(Engine {
            inner: Arc::new(Inner {
                engine,
                linker,
                settings: Arc::new(settings),
                loaded,
            }),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Compiles a component once (at deploy time), checking that it is a component of the
    /// `berth:agent` world that imports nothing else than the world and WASI; answers the
    /// artifact to store with the version and give to [`Engine::load`]. Takes as long as the
    /// compile (milliseconds for a small Rust agent, seconds for an interpreter): call it
    /// from a blocking task.
    pub fn compile(&self, bytes: &[u8]) -> Result<Vec<u8>, ComponentError> {
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        self.build(bytes, digest)?;
        let mut artifact = Vec::with_capacity(MAGIC.len() + 32 + bytes.len());
        artifact.extend_from_slice(MAGIC);
        artifact.extend_from_slice(&digest);
        artifact.extend_from_slice(bytes);
        Ok(artifact)
    }

    /// A component ready to run, from an artifact of [`Engine::compile`]. Free when it is
    /// in memory; otherwise it is compiled again, which wasmtime's code cache turns into a
    /// disk read when `cache_dir` holds it (call from a blocking task on a cold path).
    pub fn load(&self, artifact: &[u8]) -> Result<Loaded, ComponentError> {
        let corrupt = || ComponentError::invalid("not a component artifact of this engine");
        let rest = artifact.strip_prefix(MAGIC).ok_or_else(corrupt)?;
        let (digest, bytes) = rest.split_at_checked(32).ok_or_else(corrupt)?;
        let digest: [u8; 32] = digest.try_into().map_err(|_| corrupt())?;
        if let Some(hit) = self.lock().get(&digest) {
            return Ok(hit);
        }
        if <[u8; 32]>::from(Sha256::digest(bytes)) != digest {
            return Err(ComponentError::invalid(
                "the artifact does not match its digest",
            ));
        }
        self.build(bytes, digest)
    }

    fn build(&self, bytes: &[u8], digest: [u8; 32]) -> Result<Loaded, ComponentError> {
        let component = Component::new(&self.inner.engine, bytes)
            .map_err(|e| ComponentError::invalid(format!("not a valid component: {e}")))?;
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .and_then(AgentPre::new)
            .map_err(|e| {
                ComponentError::invalid(format!("not a component of the berth:agent world: {e}"))
            })?;
        let loaded = Loaded {
            pre,
            settings: self.inner.settings.clone(),
            digest,
        };
        self.lock().insert(digest, loaded.clone());
        Ok(loaded)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.inner.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Loaded components by digest, dropping the least recently used beyond `cap`.
struct Lru {
    cap: usize,
    tick: u64,
    map: HashMap<[u8; 32], (Loaded, u64)>,
}

impl Lru {
    fn new(cap: usize) -> Self {
        Lru {
            cap,
            tick: 0,
            map: HashMap::new(),
        }
    }

    fn get(&mut self, digest: &[u8; 32]) -> Option<Loaded> {
        self.tick += 1;
        let tick = self.tick;
        self.map.get_mut(digest).map(|(l, used)| {
            *used = tick;
            l.clone()
        })
    }

    fn insert(&mut self, digest: [u8; 32], loaded: Loaded) {
        self.tick += 1;
        if self.map.len() >= self.cap && !self.map.contains_key(&digest) {
            let oldest = self
                .map
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(d, _)| *d);
            if let Some(d) = oldest {
                self.map.remove(&d);
            }
        }
        self.map.insert(digest, (loaded, self.tick));
    }
}
