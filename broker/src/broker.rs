//! What request handlers and the HTTP endpoint work with: the components of a running
//! node, each built in `server.rs` from what it uses. Only the front doors (`server.rs`,
//! `connection.rs`, `http.rs`, `api/`) see this context; the components below never reach
//! back into it (see `docs/architecture.md`).

use std::sync::Arc;

use crate::config::BrokerConfig;
use crate::controller::Controller;
use crate::group::coordinator::GroupCoordinator;
use crate::log_cleaner::LogCleaner;
use crate::metadata::MetadataStore;
use crate::metrics::Metrics;
use crate::node_state::NodeState;
use crate::producer_ids::ProducerIds;
use crate::replica_manager::ReplicaManager;
use crate::replication::Replication;
use crate::topic_admin::TopicAdmin;
use crate::txn::coordinator::TransactionCoordinator;

pub struct Broker {
    pub config: Arc<BrokerConfig>,
    pub state: Arc<NodeState>,
    pub metadata: Arc<MetadataStore>,
    pub metrics: Arc<Metrics>,
    pub replicas: Arc<ReplicaManager>,
    pub groups: Arc<GroupCoordinator>,
    pub txns: Arc<TransactionCoordinator>,
    pub producer_ids: Arc<ProducerIds>,
    pub controller: Arc<Controller>,
    pub replication: Arc<Replication>,
    pub topics: TopicAdmin,
    pub cleaner: Arc<LogCleaner>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("node_id", &self.config.node_id).finish()
    }
}

impl Broker {
    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }
}
