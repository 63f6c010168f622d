//! Metering: prices and exact costs in nano-USD, the batched usage recorder that keeps
//! usage writes off the request path, and rate limits.

pub mod budget;
pub mod limiter;
pub mod prices;
pub mod recorder;

pub use limiter::{Decision, Limiter};
pub use prices::{Price, PriceTable};
pub use recorder::UsageRecorder;
