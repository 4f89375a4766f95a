//! HTTP/1.1 connections, the top of the shard's stack: the accept loop (`accept.rs`), a
//! connection's loop and router (`conn.rs`), request bodies (`body.rs`) and pipelined publishes
//! gathered into one command (`pipeline.rs`).
//! Must not: be imported by anything below it (routes, streams, core, outbox, topics).

pub mod accept;
pub mod body;
pub mod conn;
pub mod pipeline;
