//! Requests from the transaction coordinator to other brokers (and the other way round for
//! produce verification), over the inter-broker listener: one connection per request,
//! which is rare enough (markers per transaction, a verification per transaction and
//! partition) not to need a pool.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};
use tokio::net::TcpStream;

use crate::config::BrokerConfig;
use crate::metadata::MetadataStore;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Peers {
    config: Arc<BrokerConfig>,
    pub metadata: Arc<MetadataStore>,
    correlation: AtomicI32,
}

impl Peers {
    pub fn new(config: Arc<BrokerConfig>, metadata: Arc<MetadataStore>) -> Self {
        Peers { config, metadata, correlation: AtomicI32::new(0) }
    }

    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    /// Send `req` to broker `node` and read its response.
    pub async fn request<Req: Encodable, Resp: Decodable + HeaderVersion>(
        &self,
        node: i32,
        api: ApiKey,
        version: i16,
        req: &Req,
    ) -> anyhow::Result<Resp> {
        let addr = self
            .metadata
            .broker(node)
            .and_then(|b| b.endpoint(&self.config.inter_broker_listener).map(|e| format!("{}:{}", e.host, e.port)))
            .ok_or_else(|| anyhow::anyhow!("no address for broker {node}"))?;
        let correlation = self.correlation.fetch_add(1, Ordering::Relaxed);
        let client_id = format!("fjord-txn-{}", self.config.node_id);
        tokio::time::timeout(REQUEST_TIMEOUT, async {
            let mut s = TcpStream::connect(&addr).await?;
            let _ = s.set_nodelay(true);
            crate::client::round_trip(&mut s, api, version, correlation, &client_id, req).await
        })
        .await
        .map_err(|_| anyhow::anyhow!("{api:?} to broker {node} timed out"))?
    }
}
