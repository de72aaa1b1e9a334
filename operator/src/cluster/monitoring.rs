//! Step 3 (continued): the Prometheus-operator objects, built only when the
//! `monitoring.coreos.com` CRDs exist. They are `DynamicObject`s: the operator has no
//! compile-time types for another project's CRDs, and needs none to server-side apply.
//!
//! The rules and the dashboard are the repository's own `dashboards/` files, compiled in,
//! so what the operator installs is exactly what the metrics contract test checks.

use std::collections::BTreeMap;

use fjord_crds::cluster::Granularity;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use super::model::Model;

const ALERTS_YAML: &str = include_str!("../../../dashboards/alerts.yaml");
const DASHBOARDS: &[(&str, &str)] = &[
    ("fjord-cluster-overview.json", include_str!("../../../dashboards/fjord-cluster-overview.json")),
    ("fjord-consumer-groups.json", include_str!("../../../dashboards/fjord-consumer-groups.json")),
    ("fjord-operator.json", include_str!("../../../dashboards/fjord-operator.json")),
    ("fjord-topics.json", include_str!("../../../dashboards/fjord-topics.json")),
];

pub fn service_monitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"), "servicemonitors")
}

pub fn prometheus_rule_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("monitoring.coreos.com", "v1", "PrometheusRule"), "prometheusrules")
}

/// Our labels plus the user's `spec.metrics.labels` (e.g. the `release` a Prometheus
/// selects on); ours win so the leftover search still finds the object.
fn labels(m: &Model) -> BTreeMap<String, String> {
    let mut l = m.spec.metrics.labels.clone();
    l.extend(m.labels());
    l
}

fn dynamic(ar: &ApiResource, m: &Model, name: &str, labels: BTreeMap<String, String>, spec: serde_json::Value) -> DynamicObject {
    let mut o = DynamicObject::new(name, ar).within(&m.namespace);
    o.metadata.labels = Some(labels);
    o.metadata.owner_references = Some(vec![m.owner.clone()]);
    o.data = json!({ "spec": spec });
    o
}

/// Scrapes every broker's `/metrics` through the headless Service's `http` port. With
/// `granularity: topic` the per-partition offset gauges are dropped to bound cardinality
/// (consumer lag keeps its partition label: the alerts aggregate it).
pub fn service_monitor(m: &Model) -> DynamicObject {
    let mut endpoint = json!({"port": "http", "path": "/metrics", "interval": "30s"});
    if m.spec.metrics.granularity == Granularity::Topic {
        endpoint["metricRelabelings"] =
            json!([{"sourceLabels": ["__name__"], "regex": "fjord_partition_.+", "action": "drop"}]);
    }
    let spec = json!({
        "selector": {"matchLabels": m.selector()},
        "namespaceSelector": {"matchNames": [m.namespace]},
        "endpoints": [endpoint],
    });
    dynamic(&service_monitor_resource(), m, &m.name, labels(m), spec)
}

/// `dashboards/alerts.yaml` is already a rule file (`groups: [...]`), which is exactly a
/// PrometheusRule's spec.
pub fn prometheus_rule(m: &Model) -> DynamicObject {
    let spec: serde_json::Value = serde_saphyr::from_str(ALERTS_YAML).expect("dashboards/alerts.yaml is valid YAML");
    dynamic(&prometheus_rule_resource(), m, &m.name, labels(m), spec)
}

/// Grafana's dashboard sidecar loads ConfigMaps labelled `grafana_dashboard: "1"`.
pub fn dashboards_config_map(m: &Model) -> ConfigMap {
    let mut l = labels(m);
    l.insert("grafana_dashboard".into(), "1".into());
    ConfigMap {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(m.dashboards_config_map()),
            namespace: Some(m.namespace.clone()),
            labels: Some(l),
            owner_references: Some(vec![m.owner.clone()]),
            ..Default::default()
        },
        data: Some(DASHBOARDS.iter().map(|(f, body)| (f.to_string(), body.to_string())).collect()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::model::{test_cluster, validate};

    fn model(metrics: serde_json::Value) -> Model {
        validate(&test_cluster(json!({"image": "i", "replicas": 1, "storage": {"size": "1Gi"}, "metrics": metrics}))).unwrap()
    }

    #[test]
    fn rule_comes_from_the_alerts_file() {
        let r = prometheus_rule(&model(json!({"labels": {"release": "prom"}})));
        assert_eq!(r.types.as_ref().unwrap().kind, "PrometheusRule");
        let groups = r.data["spec"]["groups"].as_array().unwrap();
        assert_eq!(groups[0]["name"], "fjord-broker");
        assert!(groups[0]["rules"].as_array().unwrap().iter().any(|r| r["alert"] == "FjordOfflinePartitions"));
        assert_eq!(r.metadata.labels.as_ref().unwrap()["release"], "prom");
    }

    #[test]
    fn service_monitor_drops_partition_series_at_topic_granularity() {
        let sm = service_monitor(&model(json!({})));
        assert_eq!(sm.data["spec"]["endpoints"][0]["port"], "http");
        assert_eq!(sm.data["spec"]["endpoints"][0]["metricRelabelings"][0]["action"], "drop");
        let sm = service_monitor(&model(json!({"granularity": "partition"})));
        assert!(sm.data["spec"]["endpoints"][0].get("metricRelabelings").is_none());
        assert_eq!(sm.data["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"], "events");
    }

    #[test]
    fn dashboards_are_labelled_for_grafana() {
        let cm = dashboards_config_map(&model(json!({"dashboards": true, "labels": {"release": "prom"}})));
        let l = cm.metadata.labels.unwrap();
        assert_eq!((l["grafana_dashboard"].as_str(), l["release"].as_str()), ("1", "prom"));
        let data = cm.data.unwrap();
        assert_eq!(data.len(), 4);
        for (f, body) in &data {
            assert!(serde_json::from_str::<serde_json::Value>(body).is_ok(), "{f} is JSON");
        }
    }
}
