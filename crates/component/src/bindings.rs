//! Host-side bindings of the `berth:agent` world, generated from the SDK's WIT file (the
//! one source of the interface, shared with guests).

wasmtime::component::bindgen!({
    world: "agent",
    path: "../sdk/wit",
    imports: { default: async },
    exports: { default: async },
});

pub use berth::agent::{config, http, kv, llm, log, thread, tools, types};
