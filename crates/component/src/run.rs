//! One run of a loaded component: a fresh instance from the pool, its limits, the call of
//! `run`, and the classification of how it ended.

use crate::caps::http::AllowedHosts;
use crate::engine::Loaded;
use crate::error::{ComponentError, ErrorCode};
use crate::host::AgentHost;
use crate::state::State;
use berth_core::Manifest;
use berth_core::clock::parse_duration;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::Store;

/// What one run may consume (the manifest's `[component]` and `[limits] timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// All linear memories of the instance together.
    pub memory_mb: u32,
    /// CPU time of the component's own code, metered in fuel (waiting for imports is free).
    pub cpu_ms: u64,
    /// Wall-clock time of the whole run, waiting for imports included.
    pub timeout: Duration,
}

impl Limits {
    /// The limits a manifest gives its component (`None` without `[component]`).
    pub fn from_manifest(m: &Manifest) -> Option<Limits> {
        let c = m.component.as_ref()?;
        Some(Limits {
            memory_mb: c.memory_mb,
            cpu_ms: c.cpu_ms,
            timeout: parse_duration(&m.limits.timeout).unwrap_or(Duration::from_secs(60)),
        })
    }
}

/// What the manifest allows the component to reach (deny by default: empty grants allow
/// nothing). Checked inside each host function before the caller's host is asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// `[component] allowed_hosts`.
    pub allowed_hosts: AllowedHosts,
    /// `[model] name` then its fallbacks; a request naming no model gets the first.
    pub models: Vec<String>,
    /// `[tools] use` patterns.
    pub tools: Vec<String>,
}

impl Grants {
    pub fn from_manifest(m: &Manifest) -> Grants {
        let hosts = m
            .component
            .as_ref()
            .map(|c| c.allowed_hosts.as_slice())
            .unwrap_or_default();
        Grants {
            allowed_hosts: AllowedHosts::new(hosts),
            models: std::iter::once(m.model.name.clone())
                .chain(m.model.fallbacks.iter().cloned())
                .collect(),
            tools: m.tools.use_.clone(),
        }
    }
}

/// A run that produced an output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutput {
    pub output: String,
    /// CPU time of the component's own code in ms: fuel used over `fuel_per_ms`, rounded
    /// up. Deterministic for a given run (the same work reports the same time however busy
    /// the machine is) and the same meter `cpu_ms` is enforced in.
    pub compute_ms: u64,
    pub fuel_used: u64,
    /// Wall-clock time of the run, instantiation and waiting for imports included.
    pub wall_ms: u64,
    /// The most linear memory the instance had (all its memories), in bytes.
    pub memory_bytes: u64,
}

/// How much of a stderr tail goes into a trap's message.
const STDERR_IN_MESSAGE: usize = 1024;

impl Loaded {
    /// Runs the component once on `input` in a fresh instance. Every import goes to
    /// `host` after the `grants` check; the instance is dropped (its pool slot reset) when
    /// the run ends, whatever the ending.
    pub async fn run(
        &self,
        input: &str,
        limits: &Limits,
        grants: &Grants,
        host: Arc<dyn AgentHost>,
    ) -> Result<RunOutput, ComponentError> {
        let settings = &self.settings;
        if limits.memory_mb == 0 || limits.memory_mb > settings.max_memory_mb {
            return Err(ComponentError::invalid(format!(
                "memory_mb must be between 1 and {} on this server",
                settings.max_memory_mb
            )));
        }
        if limits.cpu_ms == 0 || limits.timeout.is_zero() {
            return Err(ComponentError::invalid(
                "cpu_ms and the timeout must be positive",
            ));
        }
        let fuel_per_ms = settings.fuel_per_ms.max(1);
        let fuel = limits.cpu_ms.saturating_mul(fuel_per_ms);
        let memory = usize::try_from(limits.memory_mb).unwrap_or(usize::MAX) << 20;
        let state = State::new(host, grants.clone(), settings, memory);
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|s| &mut s.limiter);
        let started = Instant::now();
        let setup = store
            .set_fuel(fuel)
            // Yield to the async runtime about every millisecond of CPU, so a busy component
            // neither starves other tasks nor escapes the wall-clock timeout.
            .and_then(|()| store.fuel_async_yield_interval(Some(fuel_per_ms)));
        if let Err(e) = setup {
            return Err(ComponentError::invalid(format!("cannot set fuel: {e}")));
        }

        let pre = &self.pre;
        let result = tokio::time::timeout(limits.timeout, async {
            let agent = pre.instantiate_async(&mut store).await?;
            agent.call_run(&mut store, input).await
        })
        .await;

        let fuel_used = fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        let compute_ms = fuel_used.div_ceil(fuel_per_ms);
        let wall_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let memory_bytes = u64::try_from(store.data().limiter.peak).unwrap_or(u64::MAX);
        store.data_mut().flush_output();
        let fail = |code: ErrorCode, message: String| ComponentError {
            code,
            message,
            agent_code: None,
            compute_ms,
            fuel_used,
        };
        match result {
            Err(_elapsed) => Err(fail(
                ErrorCode::Timeout,
                format!(
                    "the run took longer than its {} ms timeout",
                    limits.timeout.as_millis()
                ),
            )),
            Ok(Err(e)) => {
                let (code, message) = classify(&e, store.data(), limits, fuel_used >= fuel);
                Err(fail(code, message))
            }
            Ok(Ok(Err(agent))) => {
                let mut err = fail(
                    ErrorCode::AgentError,
                    format!("{}: {}", agent.code, agent.message),
                );
                err.agent_code = Some(agent.code);
                Err(err)
            }
            Ok(Ok(Ok(output))) => Ok(RunOutput {
                output,
                compute_ms,
                fuel_used,
                wall_ms,
                memory_bytes,
            }),
        }
    }
}

/// Which limit, if any, ended the instance, and a message for people.
fn classify(
    e: &wasmtime::Error,
    state: &State,
    limits: &Limits,
    out_of_fuel: bool,
) -> (ErrorCode, String) {
    let trap = e.downcast_ref::<wasmtime::Trap>().copied();
    if state.limiter.hit {
        return (
            ErrorCode::MemoryLimit,
            format!(
                "the component needed more than its {} MiB of memory",
                limits.memory_mb
            ),
        );
    }
    if trap == Some(wasmtime::Trap::OutOfFuel) || out_of_fuel {
        return (
            ErrorCode::CpuLimit,
            format!("the component used up its {} ms of CPU", limits.cpu_ms),
        );
    }
    if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return (
            ErrorCode::Busy,
            format!("no free instance slot on this server: {e}"),
        );
    }
    let what = match trap {
        Some(wasmtime::Trap::StackOverflow) => "stack overflow (recursion too deep)".to_owned(),
        Some(t) => t.to_string(),
        None => e.root_cause().to_string(),
    };
    let stderr = state.stderr.tail(STDERR_IN_MESSAGE);
    let message = if stderr.is_empty() {
        format!("the component trapped: {what}")
    } else {
        format!("the component trapped: {what}; stderr: {stderr}")
    };
    (ErrorCode::Trap, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_grants_come_from_the_manifest() {
        let toml = "name = \"bot\"\n[model]\nname = \"mock/echo\"\nfallbacks = [\"mock/tools\"]\n\
                    [tools]\nuse = [\"crm__*\"]\n[limits]\ntimeout = \"30s\"\n\
                    [component]\npath = \"agent.wasm\"\nmemory_mb = 32\ncpu_ms = 500\n\
                    allowed_hosts = [\"https://api.example.com\"]\n";
        let m = Manifest::parse("agent.toml", toml).unwrap();
        let limits = Limits::from_manifest(&m).unwrap();
        assert_eq!(
            limits,
            Limits {
                memory_mb: 32,
                cpu_ms: 500,
                timeout: Duration::from_secs(30)
            }
        );
        let g = Grants::from_manifest(&m);
        assert_eq!(g.models, ["mock/echo", "mock/tools"]);
        assert_eq!(g.tools, ["crm__*"]);
        assert!(
            g.allowed_hosts
                .allows(&url::Url::parse("https://api.example.com/x").unwrap())
        );

        let plain = Manifest::parse(
            "agent.toml",
            "name = \"bot\"\n[model]\nname = \"mock/echo\"\n",
        )
        .unwrap();
        assert_eq!(Limits::from_manifest(&plain), None);
        assert!(Grants::from_manifest(&plain).allowed_hosts.is_empty());
    }
}
