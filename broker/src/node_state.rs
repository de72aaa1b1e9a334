//! Where this node is in its life: joining, serving, stopping. Written by the broker
//! lifecycle (heartbeats) and the reconciler, read by the front doors (`/ready`,
//! `/status`, the listeners) and by the background tasks that stop with the process.
//! Flags only: nothing here owns or reaches another component.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

#[derive(Debug)]
pub struct NodeState {
    /// Registered, unfenced and caught up with metadata: serving.
    pub ready: AtomicBool,
    /// Caught up with the metadata log at least once since start.
    pub caught_up: AtomicBool,
    /// The metadata index the hosted replicas last reflected (0 before the first reconcile).
    /// The controller unfences this broker only once it covers its registration: an
    /// unfenced broker is elected leader, and must have its partitions open by then.
    pub reconciled_index: AtomicU64,
    pub shutting_down: AtomicBool,
    /// The registration epoch the controller gave this process.
    pub broker_epoch: AtomicU64,
    /// The address `fjord.http.listen` bound, registered with the controller so the
    /// operator and tools can find each broker's endpoint.
    pub http_addr: OnceLock<SocketAddr>,
    pub started: Instant,
    /// Wall-clock ms of the last heartbeat the active controller answered (0: none yet).
    pub controller_contact_ms: AtomicI64,
}

impl Default for NodeState {
    fn default() -> Self {
        NodeState {
            ready: AtomicBool::new(false),
            caught_up: AtomicBool::new(false),
            reconciled_index: AtomicU64::new(0),
            shutting_down: AtomicBool::new(false),
            broker_epoch: AtomicU64::new(0),
            http_addr: OnceLock::new(),
            started: Instant::now(),
            controller_contact_ms: AtomicI64::new(crate::clock::now_ms()),
        }
    }
}

impl NodeState {
    /// How long the active controller has not answered this broker (since the process
    /// started, before the first answer).
    pub fn controller_silence_ms(&self, now_ms: i64) -> i64 {
        (now_ms - self.controller_contact_ms.load(Ordering::Relaxed)).max(0)
    }
}
