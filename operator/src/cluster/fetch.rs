//! Step 1: read what the reconcile needs: the StatefulSet, its pods, whether the
//! Prometheus operator's CRDs exist, and (for status) what the brokers report.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use tokio::sync::Mutex;

use super::brokers::{self, Health};
use super::external;
use super::model::Model;
use super::roll::PodInfo;

pub struct Fetched {
    pub sts: Option<StatefulSet>,
    /// The broker pods, by ordinal.
    pub pods: Vec<PodInfo>,
    pub monitoring: bool,
}

/// API discovery of `monitoring.coreos.com/v1`, cached for a minute: it changes rarely and
/// a discovery call per reconcile would be most of the reconcile's API traffic.
#[derive(Default)]
pub struct MonitoringCache(Mutex<Option<(Instant, bool)>>);

impl MonitoringCache {
    pub async fn get(&self, client: &Client) -> Result<bool, kube::Error> {
        let mut cached = self.0.lock().await;
        if let Some((at, v)) = *cached {
            if at.elapsed() < Duration::from_secs(60) {
                return Ok(v);
            }
        }
        let v = match client.list_api_group_resources("monitoring.coreos.com/v1").await {
            Ok(list) => {
                ["servicemonitors", "prometheusrules"].iter().all(|r| list.resources.iter().any(|x| x.name == *r))
            }
            Err(kube::Error::Api(e)) if e.code == 404 => false,
            Err(e) => return Err(e),
        };
        *cached = Some((Instant::now(), v));
        Ok(v)
    }
}

pub async fn fetch(client: &Client, monitoring: &MonitoringCache, m: &Model) -> Result<Fetched, kube::Error> {
    let sts = Api::<StatefulSet>::namespaced(client.clone(), &m.namespace).get_opt(&m.name).await?;
    let pods = Api::<Pod>::namespaced(client.clone(), &m.namespace)
        .list(&ListParams::default().labels(&m.selector_string()))
        .await?;
    let mut pods: Vec<PodInfo> = pods.items.iter().filter_map(|p| pod_info(&m.name, p)).collect();
    pods.sort_by_key(|p| p.ordinal);
    Ok(Fetched { sts, pods, monitoring: monitoring.get(client).await? })
}

/// What Kubernetes assigned to the external Services (node ports, load balancer
/// addresses), read after those Services were applied so allocated ports are included.
pub async fn external_addresses(client: &Client, m: &Model, replicas: i32) -> Result<external::Addresses, kube::Error> {
    let services = Api::<Service>::namespaced(client.clone(), &m.namespace)
        .list(&ListParams::default().labels(&m.selector_string()))
        .await?;
    Ok(external::addresses(m, replicas, &services.items))
}

/// A pod of the StatefulSet `sts` as the roll sees it; None for a pod that is not one.
pub fn pod_info(sts: &str, p: &Pod) -> Option<PodInfo> {
    let name = p.name_any();
    let ordinal = p
        .labels()
        .get("apps.kubernetes.io/pod-index")
        .and_then(|i| i.parse().ok())
        .or_else(|| name.strip_prefix(&format!("{sts}-"))?.parse().ok())?;
    let status = p.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    Some(PodInfo {
        ordinal,
        name,
        ip: status.and_then(|s| s.pod_ip.clone()).filter(|ip| !ip.is_empty()),
        host_ip: status.and_then(|s| s.host_ip.clone()).filter(|ip| !ip.is_empty()),
        ready,
        terminating: p.metadata.deletion_timestamp.is_some(),
        revision: p.labels().get("controller-revision-hash").cloned(),
    })
}

/// Partition health summed over the brokers that answer: each reports the partitions it
/// leads (under-replicated) and the active controller the offline ones, so sums are
/// cluster totals. None when no broker answered.
pub async fn health(pods: &[PodInfo]) -> Option<Health> {
    let asks = pods
        .iter()
        .filter(|p| p.ready && !p.terminating)
        .filter_map(|p| p.ip.clone())
        .map(|ip| async move { brokers::health(&ip).await });
    let answers: Vec<Health> = futures::future::join_all(asks).await.into_iter().filter_map(Result::ok).collect();
    (!answers.is_empty()).then(|| Health {
        under_replicated: answers.iter().map(|h| h.under_replicated).sum(),
        offline: answers.iter().map(|h| h.offline).sum(),
    })
}

/// Partitions hosted or assigned per ordinal, for the brokers a scale-down would remove.
pub async fn partitions(
    pods: &[PodInfo],
    ordinals: std::ops::Range<i32>,
) -> std::collections::BTreeMap<i32, Result<u64, String>> {
    let asks = ordinals.map(|o| {
        let ip = pods.iter().find(|p| p.ordinal == o).and_then(|p| p.ip.clone());
        async move {
            let r = match ip {
                None => Err("pod has no IP".to_string()),
                Some(ip) => brokers::status(&ip)
                    .await
                    .map(|s| s.partitions_hosted.max(s.partitions_assigned))
                    .map_err(|e| e.to_string()),
            };
            (o, r)
        }
    });
    futures::future::join_all(asks).await.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_info_reads_ordinal_readiness_and_revision() {
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "events-2", "labels": {"controller-revision-hash": "events-abc"}},
            "status": {"podIP": "127.0.10.4", "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        let i = pod_info("events", &p).unwrap();
        assert_eq!(
            (i.ordinal, i.ready, i.ip.as_deref(), i.revision.as_deref()),
            (2, true, Some("127.0.10.4"), Some("events-abc"))
        );
        let mut q = p.clone();
        q.metadata.name = Some("other".into());
        assert!(pod_info("events", &q).is_none());
    }
}
