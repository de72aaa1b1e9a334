//! The external listener: a Service per broker (NodePort or LoadBalancer) plus a bootstrap
//! Service, and the per-broker address each broker advertises on `EXTERNAL`.
//!
//! A broker cannot know its own node port or load balancer address: Kubernetes assigns
//! them to the Service after it is created. So the operator applies these Services first,
//! reads back what they got ([`Addresses`]) and writes one line per broker into the
//! ConfigMap key [`EXTERNAL_PROPERTIES`]; each broker resolves its own line at start with
//! Kafka's `${file:PATH:KEY}` syntax (see `build::command`). Node ports exist as soon as
//! the Service does; a load balancer's address comes later, from whatever implements
//! LoadBalancer Services (a cloud controller, MetalLB), so a broker is not started before
//! its address is known ([`startable`]).

use std::collections::BTreeMap;

use fjord_crds::cluster::ExternalType;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use kube::ResourceExt;

use super::build::{meta, port};
use super::model::Model;
use super::roll::PodInfo;

/// The ConfigMap key holding the per-broker values of the external listener.
pub const EXTERNAL_PROPERTIES: &str = "external.properties";

/// What Kubernetes assigned to the external Services, by broker ordinal.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Addresses {
    /// The node port of each broker's Service (NodePort listener).
    pub node_ports: BTreeMap<i32, i32>,
    /// The load balancer address (IP or host name) of each broker's Service.
    pub hosts: BTreeMap<i32, String>,
    /// The load balancer address of the bootstrap Service.
    pub bootstrap_host: Option<String>,
}

fn type_of(m: &Model) -> Option<ExternalType> {
    m.external.as_ref().map(|e| e.type_)
}

/// The external listener's Services: `<cluster>-external-bootstrap` over all ready
/// brokers, then `<cluster>-<ordinal>-external` per broker (selected by the StatefulSet's
/// `statefulset.kubernetes.io/pod-name` label), of the spec's type and with its
/// annotations (a cloud's load balancer settings live there). With `nodePortBase`, broker
/// `i` gets node port `base + i`; otherwise Kubernetes allocates them. Empty without an
/// external listener (existing ones are then pruned).
pub fn services(m: &Model, replicas: i32) -> Vec<Service> {
    let Some(e) = &m.external else { return Vec::new() };
    let type_ = match e.type_ {
        ExternalType::NodePort => "NodePort",
        ExternalType::LoadBalancer => "LoadBalancer",
    };
    let svc = |name: String, selector: BTreeMap<String, String>, node_port: Option<i32>| {
        let mut metadata = meta(m, &name);
        metadata.annotations = (!e.annotations.is_empty()).then(|| e.annotations.clone());
        Service {
            metadata,
            spec: Some(ServiceSpec {
                type_: Some(type_.into()),
                selector: Some(selector),
                ports: Some(vec![ServicePort { node_port, ..port("external", e.port) }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    };
    let base = e.node_port_base.filter(|_| e.type_ == ExternalType::NodePort);
    let mut out = vec![svc(m.external_bootstrap_service(), m.selector(), None)];
    for i in 0..replicas {
        let mut selector = m.selector();
        selector.insert("statefulset.kubernetes.io/pod-name".into(), format!("{}-{i}", m.name));
        out.push(svc(m.external_service(i), selector, base.map(|b| b + i)));
    }
    out
}

/// [`Addresses`] from the Cluster's Services as read back after applying [`services`];
/// only brokers below `replicas` (the Services of removed brokers are pruned later).
pub fn addresses(m: &Model, replicas: i32, services: &[Service]) -> Addresses {
    let mut out = Addresses::default();
    for s in services {
        let name = s.name_any();
        let ingress = lb_address(s);
        if name == m.external_bootstrap_service() {
            out.bootstrap_host = ingress;
            continue;
        }
        let Some(ordinal) = m.external_ordinal(&name).filter(|o| *o < replicas) else { continue };
        if let Some(p) = s.spec.as_ref().and_then(|sp| sp.ports.as_ref()?.first()?.node_port) {
            out.node_ports.insert(ordinal, p);
        }
        if let Some(h) = ingress {
            out.hosts.insert(ordinal, h);
        }
    }
    out
}

/// The first ingress address of a LoadBalancer Service: its IP, or its host name (some
/// clouds give only a DNS name). IPv6 addresses are bracketed for use in a listener.
fn lb_address(s: &Service) -> Option<String> {
    let ingress = s.status.as_ref()?.load_balancer.as_ref()?.ingress.as_ref()?;
    ingress.iter().find_map(|i| match (&i.ip, &i.hostname) {
        (Some(ip), _) if ip.contains(':') => Some(format!("[{ip}]")),
        (Some(ip), _) if !ip.is_empty() => Some(ip.clone()),
        (_, Some(h)) if !h.is_empty() => Some(h.clone()),
        _ => None,
    })
}

/// The `external.properties` file: `broker-<ordinal>.port=<node port>` (NodePort) or
/// `broker-<ordinal>.host=<load balancer address>` (LoadBalancer) lines, by ordinal.
/// None without an external listener.
pub fn properties(m: &Model, a: &Addresses) -> Option<String> {
    let mut out = String::from("# Written by fjord-operator: each broker's address on its external Service.\n");
    match type_of(m)? {
        ExternalType::NodePort => {
            a.node_ports.iter().for_each(|(o, p)| out.push_str(&format!("broker-{o}.port={p}\n")))
        }
        ExternalType::LoadBalancer => a.hosts.iter().for_each(|(o, h)| out.push_str(&format!("broker-{o}.host={h}\n"))),
    }
    Some(out)
}

/// How many brokers the StatefulSet may run, and why not all it was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Startable {
    pub replicas: i32,
    pub waiting: Option<String>,
}

/// How many brokers the StatefulSet may run out of `replicas`. A broker behind a load
/// balancer advertises the balancer's address, so it starts only once that address is
/// known: the StatefulSet grows up to the first broker still waiting, and never shrinks
/// for a missing address (`current` is its present count).
pub fn startable(m: &Model, replicas: i32, current: Option<i32>, a: &Addresses) -> Startable {
    let all = Startable { replicas, waiting: None };
    if type_of(m) != Some(ExternalType::LoadBalancer) {
        return all;
    }
    let Some(first) = (0..replicas).find(|o| !a.hosts.contains_key(o)) else { return all };
    let waiting: Vec<String> =
        (first..replicas).filter(|o| !a.hosts.contains_key(o)).map(|o| m.external_service(o)).collect();
    let n = replicas.min(first.max(current.unwrap_or(0)));
    Startable {
        replicas: n,
        waiting: Some(format!("waiting for a load balancer address on Service {}", waiting.join(", "))),
    }
}

/// `status.externalBootstrap`: for NodePort, `nodeAddress:nodePort,...` of the ready
/// brokers whose node and node port are known (what they advertise); for LoadBalancer, the
/// bootstrap Service's address once a broker is ready behind it.
pub fn bootstrap(m: &Model, pods: &[PodInfo], a: &Addresses) -> Option<String> {
    let serving: Vec<&PodInfo> = pods.iter().filter(|p| p.ready && !p.terminating).collect();
    match type_of(m)? {
        ExternalType::NodePort => {
            let addrs: Vec<String> = serving
                .iter()
                .filter_map(|p| Some(format!("{}:{}", p.host_ip.as_ref()?, a.node_ports.get(&p.ordinal)?)))
                .collect();
            (!addrs.is_empty()).then(|| addrs.join(","))
        }
        ExternalType::LoadBalancer => {
            let port = m.external.as_ref()?.port;
            a.bootstrap_host.as_ref().filter(|_| !serving.is_empty()).map(|h| format!("{h}:{port}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::build::{command, config_map};
    use crate::cluster::model::{test_cluster, validate};
    use serde_json::json;

    fn model(external: serde_json::Value) -> Model {
        let spec =
            json!({"image": "i", "replicas": 3, "storage": {"size": "1Gi"}, "listeners": {"external": external}});
        validate(&test_cluster(spec)).unwrap()
    }

    fn service(name: &str, node_port: Option<i32>, ingress: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"ports": [{"port": 9094, "nodePort": node_port}]},
            "status": {"loadBalancer": {"ingress": ingress}},
        }))
        .unwrap()
    }

    fn pods(ready: &[bool]) -> Vec<PodInfo> {
        ready
            .iter()
            .enumerate()
            .map(|(i, r)| PodInfo {
                ordinal: i as i32,
                name: format!("events-{i}"),
                host_ip: Some(format!("10.0.0.{}", i + 1)),
                ready: *r,
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn node_port_services_and_per_broker_ports() {
        let m = model(json!({"type": "NodePort", "port": 9094, "nodePortBase": 31000}));
        let svcs: Vec<_> = services(&m, 2).iter().map(|s| serde_json::to_value(s).unwrap()).collect();
        let names: Vec<_> = svcs.iter().map(|s| s["metadata"]["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["events-external-bootstrap", "events-0-external", "events-1-external"]);
        assert_eq!(svcs[0]["spec"]["type"], "NodePort");
        assert_eq!(svcs[0]["spec"]["ports"], json!([{"name": "external", "port": 9094, "targetPort": "external"}]));
        assert_eq!(svcs[0]["spec"]["selector"], serde_json::to_value(m.selector()).unwrap());
        assert_eq!(
            svcs[2]["spec"]["ports"],
            json!([{"name": "external", "port": 9094, "targetPort": "external", "nodePort": 31001}])
        );
        assert_eq!(svcs[2]["spec"]["selector"]["statefulset.kubernetes.io/pod-name"], "events-1");
        assert_eq!(svcs[2]["metadata"]["ownerReferences"][0]["kind"], "Cluster");
        assert!(svcs[2]["metadata"].get("annotations").is_none());
        assert_eq!(m.external_ordinal("events-1-external"), Some(1));
        assert_eq!(m.external_ordinal("events-external-bootstrap"), None);

        let a = Addresses { node_ports: BTreeMap::from([(0, 31000), (1, 31001)]), ..Default::default() };
        assert_eq!(
            config_map(&m, &a).data.unwrap()[EXTERNAL_PROPERTIES],
            "# Written by fjord-operator: each broker's address on its external Service.\nbroker-0.port=31000\nbroker-1.port=31001\n"
        );
        let cmd = command(&m).join(" ");
        assert!(
            cmd.contains(",EXTERNAL://$(HOST_IP):${file:/etc/fjord/external.properties:broker-$(FJORD_NODE_ID).port}")
        );
        assert_eq!(
            startable(&m, 3, None, &a),
            Startable { replicas: 3, waiting: None },
            "node ports never hold a broker back"
        );

        let allocated = model(json!({"type": "NodePort"}));
        let svc = serde_json::to_value(&services(&allocated, 1)[1]).unwrap();
        assert!(svc["spec"]["ports"][0].get("nodePort").is_none(), "Kubernetes allocates it");
        let none = validate(&test_cluster(json!({"image": "i", "replicas": 3, "storage": {"size": "1Gi"}}))).unwrap();
        assert!(services(&none, 3).is_empty());
        assert_eq!(properties(&none, &a), None);
    }

    #[test]
    fn load_balancer_services_addresses_and_advertised_host() {
        let m = model(json!({"type": "LoadBalancer", "nodePortBase": 31000,
                             "annotations": {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"}}));
        let svc = serde_json::to_value(&services(&m, 1)[1]).unwrap();
        assert_eq!(svc["spec"]["type"], "LoadBalancer");
        assert!(svc["spec"]["ports"][0].get("nodePort").is_none(), "nodePortBase is for NodePort only");
        assert_eq!(svc["metadata"]["annotations"], json!({"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"}));

        let read = [
            service("events-external-bootstrap", Some(30001), json!([{"hostname": "boot.elb.example"}])),
            service("events-0-external", Some(30002), json!([{"ip": "203.0.113.10"}])),
            service("events-1-external", Some(30003), json!([{"ip": "2001:db8::1"}])),
            service("events-2-external", Some(30004), json!([])),
            service("events-3-external", Some(30005), json!([{"ip": "203.0.113.13"}])),
            service("events-bootstrap", None, json!([{"ip": "203.0.113.99"}])),
        ];
        let a = addresses(&m, 3, &read);
        assert_eq!(a.bootstrap_host.as_deref(), Some("boot.elb.example"));
        assert_eq!(a.hosts, BTreeMap::from([(0, "203.0.113.10".to_string()), (1, "[2001:db8::1]".to_string())]));
        assert_eq!(a.node_ports, BTreeMap::from([(0, 30002), (1, 30003), (2, 30004)]), "broker 3 is beyond replicas");
        assert_eq!(
            properties(&m, &a).unwrap(),
            "# Written by fjord-operator: each broker's address on its external Service.\n\
             broker-0.host=203.0.113.10\nbroker-1.host=[2001:db8::1]\n"
        );
        let cmd = command(&m).join(" ");
        assert!(
            cmd.contains(",EXTERNAL://${file:/etc/fjord/external.properties:broker-$(FJORD_NODE_ID).host}:9094"),
            "{cmd}"
        );

        // Broker 2 has no address yet: a new cluster starts brokers 0 and 1 only, a larger
        // running one is not shrunk, and the reason names the Service.
        let why = Some("waiting for a load balancer address on Service events-2-external".to_string());
        let s = |replicas, waiting: &Option<String>| Startable { replicas, waiting: waiting.clone() };
        assert_eq!(startable(&m, 3, None, &a), s(2, &why));
        assert_eq!(startable(&m, 3, Some(3), &a), s(3, &why));
        assert_eq!(startable(&m, 1, Some(3), &a), s(1, &None), "a scale-down is not held back");
        let none = Addresses::default();
        assert_eq!(startable(&m, 2, None, &none).replicas, 0);
        assert_eq!(
            startable(&m, 2, None, &none).waiting.unwrap(),
            "waiting for a load balancer address on Service events-0-external, events-1-external"
        );
    }

    #[test]
    fn external_bootstrap_per_type() {
        let np = model(json!({"type": "NodePort"}));
        let ps = pods(&[true, true, false]);
        let a = Addresses { node_ports: BTreeMap::from([(0, 31000), (1, 31001), (2, 31002)]), ..Default::default() };
        assert_eq!(bootstrap(&np, &ps, &a).as_deref(), Some("10.0.0.1:31000,10.0.0.2:31001"));
        assert_eq!(bootstrap(&np, &ps, &Addresses::default()), None);

        let lb = model(json!({"type": "LoadBalancer", "port": 9096}));
        let a = Addresses { bootstrap_host: Some("198.51.100.7".into()), ..Default::default() };
        assert_eq!(bootstrap(&lb, &ps, &a).as_deref(), Some("198.51.100.7:9096"));
        assert_eq!(bootstrap(&lb, &pods(&[false]), &a), None, "no ready broker behind it yet");
        assert_eq!(bootstrap(&lb, &ps, &Addresses::default()), None);
    }
}
