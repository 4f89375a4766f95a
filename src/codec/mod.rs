//! Pure protocol code: bytes in, `Complete/Partial/Error` out; time is a parameter.
//!
//! Architecture invariant: nothing under `codec/` imports the async runtime, sockets, the clock or
//! the shard (`tests/layout.rs` fails if a file here names them), and nothing here is `unsafe`:
//! these parsers take bytes straight from peers, and the vectors and fuzz targets vouch for safe
//! code only.

#![forbid(unsafe_code)]

pub(crate) mod decimal;
pub mod http1;
pub mod position;
pub mod route;
pub mod sse;
pub mod streampos;
pub mod subscribe;
pub mod ws;
