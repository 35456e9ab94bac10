//! One notion of "now" for the store and the batcher.
//!
//! Wall-clock milliseconds are what the store records (replicas compare them),
//! but they are advanced by tokio's monotonic clock from a wall-clock origin:
//! no jumps when NTP steps the clock, and tests with `tokio::time::pause()`
//! move it by advancing tokio time.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::store::Millis;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin_wall_ms: Millis,
    origin: Instant,
}

impl Clock {
    pub fn new() -> Self {
        let origin_wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as Millis)
            .unwrap_or(0);
        Self::starting_at(origin_wall_ms)
    }

    /// A clock whose "now" is `wall_ms` at this instant (tests).
    pub fn starting_at(wall_ms: Millis) -> Self {
        Self {
            origin_wall_ms: wall_ms,
            origin: Instant::now(),
        }
    }

    pub fn now_ms(&self) -> Millis {
        self.origin_wall_ms + self.origin.elapsed().as_millis() as Millis
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}
