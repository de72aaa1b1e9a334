//! InitProducerId. Without a transactional id each call hands out a fresh producer id at
//! epoch 0 (an idempotent producer that asks again after an error simply starts a new
//! sequence, which is always safe); with one, the transaction coordinator answers.

use kafka_protocol::messages::*;

use super::Ctx;
use crate::txn::coordinator::ProducerIdAndEpoch;

pub async fn init(ctx: &Ctx<'_>, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let resp = InitProducerIdResponse::default().with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
    let r = match req.transactional_id.as_ref().filter(|t| !t.is_empty()) {
        Some(tid) => {
            let expected = (req.producer_id.0 >= 0)
                .then_some(ProducerIdAndEpoch { producer_id: req.producer_id.0, producer_epoch: req.producer_epoch });
            ctx.broker.txns.init_producer_id(tid.as_str(), req.transaction_timeout_ms, expected).await
        }
        None => {
            ctx.broker.producer_ids.next().await.map(|id| ProducerIdAndEpoch { producer_id: id, producer_epoch: 0 })
        }
    };
    match r {
        Ok(p) => resp.with_producer_id(ProducerId(p.producer_id)).with_producer_epoch(p.producer_epoch),
        Err(e) => resp.with_error_code(ctx.err(e)),
    }
}
