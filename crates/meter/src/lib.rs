//! Metering: prices and exact costs in nano-USD, the batched usage recorder that keeps
//! usage writes off the request path, and rate limits (in memory, or shared in Redis).

pub mod budget;
#[cfg(feature = "contract")]
pub mod contract;
pub mod limiter;
pub mod prices;
pub mod recorder;

pub use limiter::{
    Decision, MemoryLimiter, RateLimiter, RedisLimiter, RedisLimiterError, RedisOptions,
};
pub use prices::{DEFAULT_PRICE_KEY, Price, PriceTable};
pub use recorder::UsageRecorder;
