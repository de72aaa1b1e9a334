//! Producer ids: each broker takes blocks of ids from the metadata quorum (Kafka's
//! ProducerIdManager) and hands them out to InitProducerId, for idempotent producers and
//! for the transaction coordinator's new transactional ids alike.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use parking_lot::Mutex;

use crate::metadata::MetadataStore;

/// Producer ids a broker takes from the controller at a time.
const PRODUCER_ID_BLOCK: i64 = 1000;

/// The ids left in the block this broker took: `next` up to `end` (exclusive).
#[derive(Default)]
struct Block {
    next: i64,
    end: i64,
}

pub struct ProducerIds {
    metadata: Arc<MetadataStore>,
    block: Mutex<Block>,
}

impl ProducerIds {
    pub fn new(metadata: Arc<MetadataStore>) -> Self {
        ProducerIds { metadata, block: Mutex::new(Block::default()) }
    }

    /// A producer id never handed out before, from this broker's block.
    pub async fn next(&self) -> Result<i64, ResponseError> {
        {
            let mut ids = self.block.lock();
            if ids.next < ids.end {
                ids.next += 1;
                return Ok(ids.next - 1);
            }
        }
        let first = self.metadata.allocate_producer_ids(PRODUCER_ID_BLOCK).await?;
        let mut ids = self.block.lock();
        *ids = Block { next: first + 1, end: first + PRODUCER_ID_BLOCK };
        Ok(first)
    }
}
