//! Agents as WebAssembly components: compiles components of the `berth:agent` world
//! (`crates/sdk/wit/agent.wit`) and runs them on wasmtime under CPU, memory and time
//! limits, serving their imports through one trait the caller implements, [`AgentHost`].
//!
//! ```text
//! deploy:  Engine::compile(bytes) ──▶ artifact (store it with the version)
//! run:     Engine::load(artifact) ──▶ Loaded (in-memory cache hit: no work)
//!          Loaded::run(input, &Limits, &Grants, Arc<dyn AgentHost>) ──▶ RunOutput | ComponentError
//! ```
//!
//! - **Limits** (`[component]` of the manifest): `cpu_ms` is metered in fuel (only the
//!   component's own instructions count, never the time it waits for the model or a tool),
//!   `memory_mb` by a resource limiter, and the run's `timeout` by the wall clock. A breach
//!   or a trap ends that one instance with a [`ComponentError`] whose [`ErrorCode`] says
//!   which (`cpu_limit`, `memory_limit`, `timeout`, `trap`); other instances do not notice.
//! - **Grants** (deny by default): each import checks the manifest's allow-list inside the
//!   host function before the caller's [`AgentHost`] is asked: HTTP only to
//!   `allowed_hosts`, tools only matching `tools.use`, models only those `[model]` names.
//!   The caller's implementation adds the tenant's policy, metering, audit and the egress
//!   guard behind it.
//! - **No secrets**: no import returns one; WASI is linked for the standard library with no
//!   files, no environment, no sockets, and stdout/stderr captured into the run's log.

mod bindings;
mod caps;
mod engine;
mod error;
mod host;
mod run;
mod state;

pub use caps::http::AllowedHosts;
pub use engine::{Engine, Loaded, Settings};
pub use error::{ComponentError, ErrorCode};
pub use host::{AgentHost, HostError, HttpError, HttpRequest, HttpResponse, LogLevel};
pub use run::{Grants, Limits, RunOutput};
