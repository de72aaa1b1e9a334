//! Step 2: validate a `Cluster` into a typed [`Model`] that every builder reads.
//!
//! Everything derived from the spec (names, labels, ports, voter ids, the rendered
//! `server.properties` and its hash) is computed once here, so the builders stay trivial
//! and a bad spec fails before anything is written. The API server already enforces most
//! rules through CEL; these checks cover what CEL cannot see (an operator without the
//! CRD's rules installed, the rendered properties file) and give a readable reason.

use std::collections::BTreeMap;

use base64::Engine;
use fjord_crds::cluster::{Advertise, ExternalListener, Granularity, OPERATOR_OWNED_CONFIG};
use fjord_crds::{ports, Cluster};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

/// Where the ConfigMap is mounted and the data volume lives (the node agent of the e2e
/// setup rewrites these paths, so they must stay literal in args and properties).
pub const CONFIG_DIR: &str = "/etc/fjord";
pub const DATA_DIR: &str = "/var/lib/fjord";
pub const CONFIG_HASH_ANNOTATION: &str = "fjord.dev/config-hash";
pub const PAUSED_ANNOTATION: &str = "fjord.dev/paused";
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
pub const MANAGER: &str = "fjord-operator";

/// A spec that cannot be deployed: the reason becomes a condition, not a crash.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// The validated, derived view of one Cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub name: String,
    pub namespace: String,
    pub owner: OwnerReference,
    pub image: String,
    /// Replicas the spec asks for (scaling may hold the StatefulSet at another count).
    pub replicas: i32,
    /// Node ids of the metadata-quorum voters: ordinals 0..voters-1, fixed at creation.
    pub voter_ids: Vec<i32>,
    pub internal_port: i32,
    pub external: Option<ExternalListener>,
    pub advertise: Advertise,
    pub rack_key: Option<String>,
    /// `server.properties`, as written into the ConfigMap.
    pub server_properties: String,
    /// Hash of `server.properties` and the image: a change rolls the brokers.
    pub config_hash: String,
    /// Kafka cluster id, derived from the Cluster's uid so it is stable and unique.
    pub cluster_id: String,
    pub spec: fjord_crds::ClusterSpec,
}

impl Model {
    pub fn headless_service(&self) -> String {
        format!("{}-brokers", self.name)
    }
    pub fn bootstrap_service(&self) -> String {
        format!("{}-bootstrap", self.name)
    }
    /// The external Service of broker `ordinal` (NodePort or LoadBalancer).
    pub fn external_service(&self, ordinal: i32) -> String {
        format!("{}-{ordinal}-external", self.name)
    }
    /// The external bootstrap Service: every ready broker, for a client's first connection.
    pub fn external_bootstrap_service(&self) -> String {
        format!("{}-external-bootstrap", self.name)
    }
    /// The ordinal of a Service named by [`Model::external_service`].
    pub fn external_ordinal(&self, service: &str) -> Option<i32> {
        service.strip_prefix(&format!("{}-", self.name))?.strip_suffix("-external")?.parse().ok()
    }
    pub fn config_map(&self) -> String {
        format!("{}-config", self.name)
    }
    pub fn dashboards_config_map(&self) -> String {
        format!("{}-dashboards", self.name)
    }
    /// `<name>-bootstrap.<ns>.svc:<port>`, the in-cluster bootstrap address.
    pub fn bootstrap(&self) -> String {
        format!("{}.{}.svc:{}", self.bootstrap_service(), self.namespace, self.internal_port)
    }
    pub fn voters(&self) -> i32 {
        self.voter_ids.len() as i32
    }

    /// Labels every object of this Cluster carries; the instance label also finds leftovers.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut l = self.selector();
        l.insert("app.kubernetes.io/managed-by".into(), MANAGER.into());
        l
    }

    /// The subset that selects broker pods (immutable in a StatefulSet, so never extended).
    pub fn selector(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".to_string(), "fjord".to_string()),
            (INSTANCE_LABEL.to_string(), self.name.clone()),
            ("app.kubernetes.io/component".to_string(), "broker".to_string()),
        ])
    }

    pub fn selector_string(&self) -> String {
        self.selector().iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
    }
}

/// Whether the Cluster asks the operator to keep its hands off.
pub fn paused(cluster: &Cluster) -> bool {
    cluster.annotations().get(PAUSED_ANNOTATION).is_some_and(|v| v == "true")
}

/// Validate `cluster` and derive the model.
pub fn validate(cluster: &Cluster) -> Result<Model, Invalid> {
    let spec = &cluster.spec;
    let name = cluster.name_any();
    let namespace = cluster.namespace().ok_or_else(|| Invalid("a Cluster is namespaced".into()))?;
    let uid = cluster.uid().ok_or_else(|| Invalid("the Cluster has no uid yet".into()))?;
    if name.len() > 40 {
        return Err(Invalid(format!("name {name:?} is longer than 40 characters")));
    }
    if spec.image.trim().is_empty() {
        return Err(Invalid("spec.image is empty".into()));
    }
    if spec.replicas < 1 {
        return Err(Invalid(format!("spec.replicas is {}, at least 1 is needed", spec.replicas)));
    }
    let voter_ids = voter_ids(cluster)?;
    if spec.replicas < voter_ids.len() as i32 {
        return Err(Invalid(format!(
            "spec.replicas {} is below the {} metadata-quorum voters; the voter set is fixed",
            spec.replicas,
            voter_ids.len()
        )));
    }
    let internal_port = spec.listeners.internal.port;
    let mut used = vec![ports::CONTROLLER, ports::HTTP];
    for (what, port) in std::iter::once(("internal", internal_port))
        .chain(spec.listeners.external.as_ref().map(|e| ("external", e.port)))
    {
        if !(1..=65535).contains(&port) || used.contains(&port) {
            return Err(Invalid(format!(
                "the {what} listener port {port} is out of range or already taken (9093, 9644 are reserved)"
            )));
        }
        used.push(port);
    }
    for (k, v) in &spec.config {
        if OPERATOR_OWNED_CONFIG.contains(&k.as_str()) {
            return Err(Invalid(format!("spec.config cannot set {k}: the operator manages it")));
        }
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
            return Err(Invalid(format!("spec.config key {k:?} is not a property name")));
        }
        if v.contains(['\n', '\r']) {
            return Err(Invalid(format!("spec.config value of {k} contains a line break")));
        }
    }
    let cluster_id = cluster_id(&uid);
    let server_properties =
        server_properties(&name, &namespace, &voter_ids, &cluster_id, spec.metrics.granularity, &spec.config);
    let config_hash = short_hash(&[server_properties.as_bytes(), b"\n", spec.image.as_bytes()]);
    let owner = cluster.controller_owner_ref(&()).ok_or_else(|| Invalid("the Cluster has no uid yet".into()))?;
    Ok(Model {
        name,
        namespace,
        owner,
        image: spec.image.clone(),
        replicas: spec.replicas,
        voter_ids,
        internal_port,
        external: spec.listeners.external.clone(),
        advertise: spec.advertise,
        rack_key: spec.rack.as_ref().map(|r| r.topology_key.clone()),
        server_properties,
        config_hash,
        cluster_id,
        spec: spec.clone(),
    })
}

/// The voters recorded in status win (the quorum's voter list is static); otherwise
/// `spec.voters`, else the smaller of replicas and 3.
fn voter_ids(cluster: &Cluster) -> Result<Vec<i32>, Invalid> {
    if let Some(recorded) = cluster.status.as_ref().map(|s| &s.voters).filter(|v| !v.is_empty()) {
        return Ok(recorded.clone());
    }
    let n = cluster.spec.voters.unwrap_or(cluster.spec.replicas.min(3));
    if ![1, 3, 5].contains(&n) && cluster.spec.voters.is_some() {
        return Err(Invalid(format!("spec.voters is {n}; it must be 1, 3 or 5")));
    }
    // Default with 2 replicas: 1 voter (an even quorum survives no more failures).
    let n = if n == 2 { 1 } else { n };
    if n > cluster.spec.replicas {
        return Err(Invalid(format!("spec.voters {n} exceeds spec.replicas {}", cluster.spec.replicas)));
    }
    Ok((0..n).collect())
}

/// The properties every broker pod shares; per-pod values (node.id, listeners) are
/// `--override`s on the command line, expanded by the kubelet from the pod's env.
/// `fjord.metrics.granularity` is written only when it is not the broker's default
/// (`topic`), so clusters at the default keep their config hash (no roll on an upgrade).
pub fn server_properties(
    name: &str,
    ns: &str,
    voter_ids: &[i32],
    cluster_id: &str,
    granularity: Granularity,
    config: &BTreeMap<String, String>,
) -> String {
    let voters = voter_ids
        .iter()
        .map(|id| format!("{id}@{name}-{id}.{name}-brokers.{ns}.svc:{}", ports::CONTROLLER))
        .collect::<Vec<_>>()
        .join(",");
    let mut out = String::from("# Written by fjord-operator from the Cluster's spec; edits are overwritten.\n");
    for (k, v) in [
        ("controller.quorum.voters", voters.as_str()),
        ("controller.listener.names", "CONTROLLER"),
        ("inter.broker.listener.name", "INTERNAL"),
        ("listener.security.protocol.map", "INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT,EXTERNAL:PLAINTEXT"),
        ("log.dirs", "/var/lib/fjord/data"),
        ("cluster.id", cluster_id),
    ] {
        out.push_str(&format!("{k}={v}\n"));
    }
    if granularity == Granularity::Partition {
        out.push_str("fjord.metrics.granularity=partition\n");
    }
    if !config.is_empty() {
        out.push_str("# spec.config\n");
        for (k, v) in config {
            out.push_str(&format!("{k}={v}\n"));
        }
    }
    out
}

/// Kafka cluster ids are 16 bytes in URL-safe base64 without padding; the Cluster's uid
/// is a UUID, i.e. 16 bytes, so it maps one to one (non-UUID uids are hashed).
pub fn cluster_id(uid: &str) -> String {
    let hex: String = uid.chars().filter(|c| *c != '-').collect();
    let bytes: Vec<u8> = if hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        (0..16).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect()
    } else {
        Sha256::digest(uid.as_bytes())[..16].to_vec()
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// First 16 hex digits of SHA-256: stable across operator builds (unlike std's hasher),
/// so upgrading the operator does not roll every broker.
pub fn short_hash(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Kubernetes needs the Cluster's kind etc. only through `owner`; tests build models with
/// this helper from YAML.
#[cfg(test)]
pub fn test_cluster(yaml_spec: serde_json::Value) -> Cluster {
    let mut c: Cluster = serde_json::from_value(serde_json::json!({
        "apiVersion": "fjord.dev/v1alpha1", "kind": "Cluster",
        "metadata": {"name": "events", "namespace": "prod", "uid": "6a1f2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "generation": 1},
        "spec": yaml_spec,
    }))
    .expect("a valid test Cluster");
    c.meta_mut().generation = Some(1);
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> serde_json::Value {
        json!({"image": "fjord/broker:0.1.0", "replicas": 3, "storage": {"size": "1Gi"}})
    }

    #[test]
    fn derives_names_voters_and_properties() {
        let m = validate(&test_cluster(spec())).unwrap();
        assert_eq!(m.voter_ids, vec![0, 1, 2]);
        assert_eq!(m.bootstrap(), "events-bootstrap.prod.svc:9092");
        assert_eq!(m.cluster_id, "ah8sPU5fSmuMfZ4PGis8TQ");
        assert!(m.server_properties.contains(
            "controller.quorum.voters=0@events-0.events-brokers.prod.svc:9093,1@events-1.events-brokers.prod.svc:9093,2@events-2.events-brokers.prod.svc:9093\n"
        ));
        assert!(!m.server_properties.contains("process.roles"), "the broker derives its roles");
        assert_eq!(m.config_hash.len(), 16);
    }

    #[test]
    fn voters_default_and_status_wins() {
        let mut s = spec();
        s["replicas"] = json!(1);
        assert_eq!(validate(&test_cluster(s.clone())).unwrap().voter_ids, vec![0]);
        s["replicas"] = json!(2);
        assert_eq!(validate(&test_cluster(s.clone())).unwrap().voter_ids, vec![0]);
        s["replicas"] = json!(7);
        assert_eq!(validate(&test_cluster(s.clone())).unwrap().voter_ids, vec![0, 1, 2]);
        let mut c = test_cluster(s);
        c.status = Some(fjord_crds::ClusterStatus { voters: vec![0], ..Default::default() });
        assert_eq!(validate(&c).unwrap().voter_ids, vec![0], "status.voters is fixed");
    }

    #[test]
    fn config_changes_the_hash_and_bad_config_is_invalid() {
        let a = validate(&test_cluster(spec())).unwrap();
        let mut s = spec();
        s["config"] = json!({"log.retention.hours": "24"});
        let b = validate(&test_cluster(s.clone())).unwrap();
        assert_ne!(a.config_hash, b.config_hash);
        assert!(b.server_properties.ends_with("# spec.config\nlog.retention.hours=24\n"));
        s["config"] = json!({"node.id": "4"});
        assert!(validate(&test_cluster(s.clone())).unwrap_err().0.contains("node.id"));
        s["config"] = json!({"a": "x\ny=z"});
        assert!(validate(&test_cluster(s)).is_err());
    }

    #[test]
    fn metrics_granularity_is_a_broker_property() {
        let a = validate(&test_cluster(spec())).unwrap();
        assert!(!a.server_properties.contains("fjord.metrics.granularity"), "topic is the broker's default");
        let mut s = spec();
        s["metrics"] = json!({"granularity": "topic"});
        assert_eq!(validate(&test_cluster(s.clone())).unwrap().config_hash, a.config_hash);
        s["metrics"] = json!({"granularity": "partition"});
        let b = validate(&test_cluster(s.clone())).unwrap();
        assert!(b.server_properties.contains("\nfjord.metrics.granularity=partition\n"));
        assert_ne!(a.config_hash, b.config_hash, "a change rolls the brokers");
        s["config"] = json!({"fjord.metrics.granularity": "partition"});
        assert!(validate(&test_cluster(s)).unwrap_err().0.contains("fjord.metrics.granularity"));
    }

    #[test]
    fn rejects_reserved_ports_and_too_many_voters() {
        let mut s = spec();
        s["listeners"] = json!({"internal": {"port": 9644}});
        assert!(validate(&test_cluster(s)).is_err());
        let mut s = spec();
        s["voters"] = json!(5);
        assert!(validate(&test_cluster(s)).unwrap_err().0.contains("exceeds"));
    }

    #[test]
    fn cluster_id_from_a_non_uuid_uid_is_still_22_chars() {
        assert_eq!(cluster_id("not-a-uuid").len(), 22);
    }
}
