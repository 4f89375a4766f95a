//! Request bodies: which body a route accepts, and reading it (`Content-Length` or chunked,
//! with `100 Continue` when asked) within the route's limit and the idle timeout.

use std::time::{Duration, Instant};

use crate::codec::http1::{self, BodyKind, ChunkedDecoder, Head};
use crate::codec::route::Route;
use crate::shard::core::Shard;
use crate::shard::routes::connio::Conn;

/// Which body a route accepts, in bytes.
pub(crate) fn body_limit(sh: &Shard, r: &Route) -> Option<usize> {
    let c = &sh.node.cfg;
    match r {
        Route::Publish(_) => Some(c.max_message_bytes),
        Route::PublishBatch => Some(c.max_body_bytes),
        _ => None,
    }
}

/// Reads the body of the current request into `body`, answering 100 Continue when asked.
/// Returns the total bytes of head + framed body consumed from `rbuf` is left to the caller
/// through `consumed`.
pub(crate) async fn read_body(
    c: &mut Conn,
    head: &Head,
    limit: usize,
    body: &mut Vec<u8>,
) -> Result<usize, (u16, &'static str)> {
    let start = head.head_len;
    let idle = Duration::from_secs(c.sh.node.cfg.idle_timeout_secs);
    let deadline = move || Instant::now() + idle;
    match head.body {
        BodyKind::None => Ok(start),
        BodyKind::Length(n) => {
            if n > limit as u64 {
                return Err((413, "request body larger than the limit"));
            }
            let n = n as usize;
            if head.expect_continue && c.rbuf.len() < start + n {
                c.wbuf.extend_from_slice(http1::CONTINUE_100);
                c.flush().await.map_err(|_| (400, "gone"))?;
            }
            while c.rbuf.len() < start + n {
                let d = deadline();
                c.fill(d, false, true, &mut None)
                    .await
                    .map_err(|_| (408, "request body not received in time"))?;
            }
            body.extend_from_slice(&c.rbuf[start..start + n]);
            Ok(start + n)
        }
        BodyKind::Chunked => {
            let mut dec = ChunkedDecoder::new(limit);
            let mut pos = start;
            if head.expect_continue && c.rbuf.len() == start {
                c.wbuf.extend_from_slice(http1::CONTINUE_100);
                c.flush().await.map_err(|_| (400, "gone"))?;
            }
            loop {
                let (used, done) = dec
                    .decode(&c.rbuf[pos..], body)
                    .map_err(|e| (e.status(), e.reason()))?;
                pos += used;
                if done {
                    return Ok(pos);
                }
                let d = deadline();
                c.fill(d, false, true, &mut None)
                    .await
                    .map_err(|_| (408, "request body not received in time"))?;
            }
        }
    }
}
