//! The MCP tool layer: each tenant's registry of MCP servers, the connections to them
//! (rmcp, Streamable HTTP, both protocol revisions), credentials injected from the vault,
//! discovery and health checks, and the `ToolHost` the agent loop calls tools through.

pub mod registry;
pub mod upstream;

pub use registry::{
    HeaderRef, LogMask, McpRegistry, Registered, RegistryConfig, RegistryError, ToolEntry,
    split_name, valid_server_name,
};
pub use upstream::{UpstreamError, UpstreamLimits};
