//! Step 3: every child object of a Cluster, built by pure functions from the [`Model`].
//!
//! No API calls here: the same inputs give the same objects, which is what makes the
//! spec-hash comparison in `apply` meaningful and lets the tests pin the output.

use std::collections::BTreeMap;

use fjord_crds::cluster::{Advertise, ExternalType};
use fjord_crds::ports;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SecurityContext, Service,
    ServiceAccount, ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::external::{self, EXTERNAL_PROPERTIES};
use super::model::{Model, CONFIG_DIR, CONFIG_HASH_ANNOTATION, DATA_DIR};

/// Seconds a broker gets for a controlled shutdown (leadership moves away first).
const GRACE_SECONDS: i64 = 60;
/// Non-root user the container runs as (the image's `fjord` user).
const UID: i64 = 65532;

pub(super) fn meta(m: &Model, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(m.namespace.clone()),
        labels: Some(m.labels()),
        owner_references: Some(vec![m.owner.clone()]),
        ..Default::default()
    }
}

pub fn service_account(m: &Model) -> ServiceAccount {
    // Brokers never call the Kubernetes API: no token in the pods.
    ServiceAccount { metadata: meta(m, &m.name), automount_service_account_token: Some(false), ..Default::default() }
}

/// The brokers' configuration: `server.properties`, shared by all, and with an external
/// listener `external.properties`, each broker's external address (see [`external`]). A
/// broker reads its own line at start through Kafka's `${file:PATH:KEY}` syntax in its
/// command (see [`command`]). The file is not part of the config hash: a scale-up adds a
/// line without rolling the running brokers.
pub fn config_map(m: &Model, addresses: &external::Addresses) -> ConfigMap {
    let mut data = BTreeMap::from([("server.properties".to_string(), m.server_properties.clone())]);
    if let Some(props) = external::properties(m, addresses) {
        data.insert(EXTERNAL_PROPERTIES.into(), props);
    }
    ConfigMap { metadata: meta(m, &m.config_map()), data: Some(data), ..Default::default() }
}

pub(super) fn port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(name.into())),
        ..Default::default()
    }
}

/// The headless Service that gives each pod its DNS name; not-ready pods are published
/// because the quorum must form before any broker is ready.
pub fn headless_service(m: &Model) -> Service {
    let mut ports =
        vec![port("kafka", m.internal_port), port("controller", ports::CONTROLLER), port("http", ports::HTTP)];
    if let Some(e) = &m.external {
        ports.push(port("external", e.port));
    }
    Service {
        metadata: meta(m, &m.headless_service()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(m.selector()),
            ports: Some(ports),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The client bootstrap Service: ready brokers only.
pub fn bootstrap_service(m: &Model) -> Service {
    Service {
        metadata: meta(m, &m.bootstrap_service()),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(m.selector()),
            ports: Some(vec![port("kafka", m.internal_port)]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn pod_disruption_budget(m: &Model) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(m, &m.name),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector { match_labels: Some(m.selector()), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: path.into(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The broker command line. Per-pod values come from env vars the kubelet expands
/// (`$(VAR)`), so all pods share one template; brokers bind their pod IP, never 0.0.0.0
/// (pods of the e2e node agent share one network namespace).
pub fn command(m: &Model) -> Vec<String> {
    let adv_host = match m.advertise {
        Advertise::PodDnsName => format!("$(POD_NAME).{}.$(POD_NAMESPACE).svc", m.headless_service()),
        Advertise::PodIp => "$(POD_IP)".to_string(),
    };
    let mut listeners =
        format!("INTERNAL://$(POD_IP):{},CONTROLLER://$(POD_IP):{}", m.internal_port, ports::CONTROLLER);
    let mut advertised = format!("INTERNAL://{adv_host}:{}", m.internal_port);
    if let Some(e) = &m.external {
        listeners.push_str(&format!(",EXTERNAL://$(POD_IP):{}", e.port));
        match e.type_ {
            // The node's address and this broker's node port, from `external.properties`.
            ExternalType::NodePort => advertised.push_str(&format!(
                ",EXTERNAL://$(HOST_IP):${{file:{CONFIG_DIR}/{EXTERNAL_PROPERTIES}:broker-$(FJORD_NODE_ID).port}}"
            )),
            // This broker's load balancer address, from `external.properties`.
            ExternalType::LoadBalancer => advertised.push_str(&format!(
                ",EXTERNAL://${{file:{CONFIG_DIR}/{EXTERNAL_PROPERTIES}:broker-$(FJORD_NODE_ID).host}}:{}",
                e.port
            )),
        }
    }
    let mut cmd: Vec<String> =
        ["fjord", "broker", "--config", "/etc/fjord/server.properties"].map(String::from).to_vec();
    let mut set = |kv: String| {
        cmd.push("--override".into());
        cmd.push(kv);
    };
    set("node.id=$(FJORD_NODE_ID)".into());
    set(format!("listeners={listeners}"));
    set(format!("advertised.listeners={advertised}"));
    set(format!("fjord.http.listen=$(POD_IP):{}", ports::HTTP));
    if m.rack_key.is_some() {
        set("broker.rack=$(FJORD_RACK)".into());
    }
    cmd
}

fn container(m: &Model) -> Container {
    let mut env = vec![
        field_env("FJORD_NODE_ID", "metadata.labels['apps.kubernetes.io/pod-index']"),
        field_env("POD_IP", "status.podIP"),
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
    ];
    // Only with a NodePort listener: an unchanged template does not roll existing clusters.
    if m.external.as_ref().is_some_and(|e| e.type_ == ExternalType::NodePort) {
        env.push(field_env("HOST_IP", "status.hostIP"));
    }
    if let Some(key) = &m.rack_key {
        env.push(field_env("FJORD_RACK", &format!("metadata.labels['{key}']")));
    }
    let cport =
        |name: &str, port: i32| ContainerPort { name: Some(name.into()), container_port: port, ..Default::default() };
    let mut ports =
        vec![cport("kafka", m.internal_port), cport("controller", ports::CONTROLLER), cport("http", ports::HTTP)];
    if let Some(e) = &m.external {
        ports.push(cport("external", e.port));
    }
    let mount = |name: &str, path: &str, ro: bool| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: ro.then_some(true),
        ..Default::default()
    };
    Container {
        name: "broker".into(),
        image: Some(m.image.clone()),
        command: Some(command(m)),
        env: Some(env),
        ports: Some(ports),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/ready".into()),
                port: IntOrString::Int(ports::HTTP),
                ..Default::default()
            }),
            period_seconds: Some(2),
            failure_threshold: Some(3),
            ..Default::default()
        }),
        resources: m.spec.resources.clone(),
        volume_mounts: Some(vec![
            mount("config", CONFIG_DIR, true),
            mount("data", DATA_DIR, false),
            mount("tmp", "/tmp", false),
        ]),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Spread brokers over nodes unless the user chose an affinity.
fn default_affinity(m: &Model) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
                weight: 100,
                pod_affinity_term: PodAffinityTerm {
                    topology_key: "kubernetes.io/hostname".into(),
                    label_selector: Some(LabelSelector { match_labels: Some(m.selector()), ..Default::default() }),
                    ..Default::default()
                },
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod_template(m: &Model) -> PodTemplateSpec {
    let pt = m.spec.pod_template.clone().unwrap_or_default();
    let mut labels = pt.labels.clone();
    labels.extend(m.labels()); // ours win
    let mut annotations = pt.annotations.clone();
    annotations.insert(CONFIG_HASH_ANNOTATION.into(), m.config_hash.clone());
    PodTemplateSpec {
        metadata: Some(ObjectMeta { labels: Some(labels), annotations: Some(annotations), ..Default::default() }),
        spec: Some(PodSpec {
            service_account_name: Some(m.name.clone()),
            automount_service_account_token: Some(false),
            termination_grace_period_seconds: Some(GRACE_SECONDS),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(UID),
                run_as_group: Some(UID),
                fs_group: Some(UID),
                ..Default::default()
            }),
            containers: vec![container(m)],
            volumes: Some(vec![
                Volume {
                    name: "config".into(),
                    config_map: Some(ConfigMapVolumeSource { name: m.config_map(), ..Default::default() }),
                    ..Default::default()
                },
                Volume { name: "tmp".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() },
            ]),
            affinity: Some(pt.affinity.clone().unwrap_or_else(|| default_affinity(m))),
            tolerations: (!pt.tolerations.is_empty()).then(|| pt.tolerations.clone()),
            node_selector: (!pt.node_selector.is_empty()).then(|| pt.node_selector.clone()),
            priority_class_name: pt.priority_class_name.clone(),
            ..Default::default()
        }),
    }
}

/// The brokers. `replicas` is what scaling decided (a blocked scale-down keeps the old
/// count). Updates are OnDelete: the operator restarts pods itself, one at a time, each
/// only when `/restart-safe` agrees.
pub fn stateful_set(m: &Model, replicas: i32) -> StatefulSet {
    let storage = &m.spec.storage;
    StatefulSet {
        metadata: meta(m, &m.name),
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(m.headless_service()),
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy { type_: Some("OnDelete".into()), ..Default::default() }),
            selector: LabelSelector { match_labels: Some(m.selector()), ..Default::default() },
            template: pod_template(m),
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta { name: Some("data".into()), ..Default::default() },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    storage_class_name: storage.storage_class_name.clone(),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([("storage".to_string(), storage.size.clone())])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::model::{test_cluster, validate};
    use serde_json::json;

    fn model(extra: serde_json::Value) -> Model {
        let mut spec = json!({"image": "fjord/broker:0.1.0", "replicas": 3, "storage": {"size": "1Gi"}});
        spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        validate(&test_cluster(spec)).unwrap()
    }

    #[test]
    fn command_binds_the_pod_ip_and_advertises_dns() {
        let cmd = command(&model(json!({}))).join(" ");
        assert_eq!(
            cmd,
            "fjord broker --config /etc/fjord/server.properties --override node.id=$(FJORD_NODE_ID) \
             --override listeners=INTERNAL://$(POD_IP):9092,CONTROLLER://$(POD_IP):9093 \
             --override advertised.listeners=INTERNAL://$(POD_NAME).events-brokers.$(POD_NAMESPACE).svc:9092 \
             --override fjord.http.listen=$(POD_IP):9644"
        );
    }

    #[test]
    fn command_with_pod_ip_rack_and_external() {
        let m = model(json!({"advertise": "PodIp", "rack": {"topologyKey": "topology.kubernetes.io/zone"},
                             "listeners": {"external": {"type": "NodePort", "port": 9095}}}));
        let cmd = command(&m).join(" ");
        assert!(
            cmd.contains("listeners=INTERNAL://$(POD_IP):9092,CONTROLLER://$(POD_IP):9093,EXTERNAL://$(POD_IP):9095")
        );
        assert!(cmd.contains(
            "advertised.listeners=INTERNAL://$(POD_IP):9092,EXTERNAL://$(HOST_IP):${file:/etc/fjord/external.properties:broker-$(FJORD_NODE_ID).port}"
        ));
        assert!(cmd.ends_with("--override broker.rack=$(FJORD_RACK)"));
        let sts = serde_json::to_value(stateful_set(&m, 3)).unwrap();
        let env = &sts["spec"]["template"]["spec"]["containers"][0]["env"];
        assert_eq!(env[4], json!({"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}));
        assert_eq!(
            env[5],
            json!({"name": "FJORD_RACK", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['topology.kubernetes.io/zone']"}}})
        );
        let svc = serde_json::to_value(headless_service(&m)).unwrap();
        assert_eq!(svc["spec"]["ports"][3], json!({"name": "external", "port": 9095, "targetPort": "external"}));
    }

    #[test]
    fn stateful_set_shape() {
        let m = model(json!({"podTemplate": {"labels": {"team": "a", "app.kubernetes.io/name": "x"}}}));
        let v = serde_json::to_value(stateful_set(&m, 2)).unwrap();
        let s = &v["spec"];
        assert_eq!(s["replicas"], 2);
        assert_eq!(s["serviceName"], "events-brokers");
        assert_eq!(s["podManagementPolicy"], "Parallel");
        assert_eq!(s["updateStrategy"], json!({"type": "OnDelete"}));
        assert_eq!(v["metadata"]["ownerReferences"][0]["kind"], "Cluster");
        assert_eq!(v["metadata"]["ownerReferences"][0]["controller"], true);
        let t = &s["template"];
        assert_eq!(t["metadata"]["labels"]["team"], "a");
        assert_eq!(t["metadata"]["labels"]["app.kubernetes.io/name"], "fjord", "our labels win");
        assert_eq!(t["metadata"]["annotations"][CONFIG_HASH_ANNOTATION], m.config_hash.as_str());
        let c = &t["spec"]["containers"][0];
        assert_eq!(c["name"], "broker");
        assert_eq!(c["readinessProbe"]["httpGet"], json!({"path": "/ready", "port": 9644}));
        assert_eq!(
            c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.labels['apps.kubernetes.io/pod-index']"
        );
        assert_eq!(s["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"], "1Gi");
        assert_eq!(t["spec"]["volumes"][0]["configMap"]["name"], "events-config");
    }

    #[test]
    fn services_and_pdb() {
        let m = model(json!({}));
        let h = serde_json::to_value(headless_service(&m)).unwrap();
        assert_eq!(h["metadata"]["name"], "events-brokers");
        assert_eq!(h["spec"]["clusterIP"], "None");
        assert_eq!(h["spec"]["publishNotReadyAddresses"], true);
        let names: Vec<_> =
            h["spec"]["ports"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["kafka", "controller", "http"]);
        let b = serde_json::to_value(bootstrap_service(&m)).unwrap();
        assert_eq!(b["metadata"]["name"], "events-bootstrap");
        assert_eq!(b["spec"]["ports"], json!([{"name": "kafka", "port": 9092, "targetPort": "kafka"}]));
        let p = serde_json::to_value(pod_disruption_budget(&m)).unwrap();
        assert_eq!(p["spec"]["maxUnavailable"], 1);
        assert_eq!(p["metadata"]["labels"]["app.kubernetes.io/managed-by"], "fjord-operator");
        let cm =
            config_map(&m, &external::Addresses { node_ports: BTreeMap::from([(0, 31000)]), ..Default::default() });
        assert_eq!(cm.data.as_ref().unwrap().len(), 1, "no external listener, no external.properties");
        assert_eq!(cm.metadata.name.as_deref(), Some("events-config"));
        assert!(cm.data.unwrap()["server.properties"].contains("log.dirs=/var/lib/fjord/data"));
        assert_eq!(service_account(&m).automount_service_account_token, Some(false));
    }
}
