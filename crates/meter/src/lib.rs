//! Metering: prices and exact costs in nano-USD, and the batched usage recorder that keeps
//! usage writes off the request path.

pub mod prices;
pub mod recorder;

pub use prices::{Price, PriceTable};
pub use recorder::UsageRecorder;
