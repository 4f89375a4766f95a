//! Pure protocol code: bytes in, `Complete/Partial/Error` out; time is a parameter.
//!
//! Architecture invariant: nothing under `codec/` imports the async runtime, sockets, the clock or the shard.

pub mod http1;
pub mod position;
pub mod route;
pub mod sse;
pub mod ws;
