//! The CRDs' CEL rules, run here with kube-cel (the cel-rust interpreter plus Kubernetes'
//! CEL libraries) on the schema the types generate, with `self` and `oldSelf` bound the way
//! the API server binds them; the committed YAML must equal what the types generate; the
//! examples must pass the same rules.

use std::collections::BTreeSet;
use std::path::Path;

use fjord_crds::{Cluster, Topic};
use kube::core::cel::{analyze_rule, compile_schema, ErrorKind, ScopeContext, Validator, WarningKind};
use serde_json::{json, Value};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The openAPIV3Schema of the CRD `crdgen` writes to `file`.
fn schema(file: &str) -> Value {
    let crd = fjord_crds::crds().into_iter().find(|c| c.file == file).unwrap().crd;
    let schema = crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap();
    serde_json::to_value(schema).unwrap()
}

fn example(file: &str) -> Value {
    let text = std::fs::read_to_string(root().join("examples").join(file)).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

/// Every `x-kubernetes-validations` entry below `schema`: (path, node schema, rule, message).
fn rules(schema: &Value, path: &str, out: &mut Vec<(String, Value, String, String)>) {
    for rule in schema.get("x-kubernetes-validations").and_then(Value::as_array).into_iter().flatten() {
        let message = rule.get("message").and_then(Value::as_str).unwrap_or_default();
        out.push((path.into(), schema.clone(), rule["rule"].as_str().unwrap().into(), message.into()));
    }
    for (name, child) in schema.get("properties").and_then(Value::as_object).into_iter().flatten() {
        rules(child, &format!("{path}.{name}"), out);
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = schema.get(key).filter(|c| c.is_object()) {
            rules(child, &format!("{path}[*]"), out);
        }
    }
}

fn all_rules() -> Vec<(String, Value, String, String)> {
    let mut out = Vec::new();
    rules(&schema("cluster.yaml"), "Cluster", &mut out);
    rules(&schema("topic.yaml"), "Topic", &mut out);
    out
}

/// Messages of the rules `object` breaks. A rule that fails to compile or evaluate panics:
/// it would be an interpreter gap or a broken rule, not a verdict on the object.
fn violations(file: &str, object: &Value, old: Option<&Value>) -> Vec<String> {
    match Validator::new().validate(&schema(file), object, old) {
        Ok(()) => vec![],
        Err(errors) => errors
            .iter()
            .map(|e| {
                assert_eq!(e.kind, ErrorKind::ValidationFailure, "{}: rule `{}`: {}", e.field_path, e.rule, e.message);
                e.message.clone()
            })
            .collect(),
    }
}

/// `base` with the value at the JSON pointer `at` replaced (created if missing; removed
/// when `value` is null).
fn with(base: &Value, at: &str, value: Value) -> Value {
    let mut object = base.clone();
    let (parent, key) = at.rsplit_once('/').unwrap();
    let mut node = &mut object;
    for part in parent.split('/').skip(1) {
        node = node.as_object_mut().unwrap().entry(part).or_insert(json!({}));
    }
    let map = node.as_object_mut().unwrap();
    if value.is_null() {
        map.remove(key);
    } else {
        map.insert(key.into(), value);
    }
    object
}

struct Case {
    file: &'static str,
    object: Value,
    old: Option<Value>,
    /// The one message expected; None for a valid change.
    expect: Option<&'static str>,
}

fn case(file: &'static str, object: Value, old: Option<Value>, expect: Option<&'static str>) -> Case {
    Case { file, object, old, expect }
}

fn cases() -> Vec<Case> {
    let c = example("cluster.yaml");
    let t = example("topic.yaml");
    let (cl, tp) = ("cluster.yaml", "topic.yaml");
    let long = |n: usize| json!("a".repeat(n));
    vec![
        // Cluster
        case(cl, with(&c, "/metadata/name", long(41)), None, Some("a Cluster name is at most 40 characters: pod and Service names derive from it")),
        case(cl, with(&c, "/spec/image", json!("")), None, Some("image must not be empty")),
        case(cl, with(&c, "/spec/replicas", json!(0)), None, Some("replicas must be at least 1")),
        case(cl, with(&c, "/spec/voters", json!(2)), None, Some("voters must be 1, 3 or 5")),
        case(cl, with(&c, "/spec/voters", json!(5)), None, Some("voters cannot exceed replicas: every voter is a broker pod")),
        case(cl, with(&c, "/spec/voters", json!(1)), Some(c.clone()), Some("voters cannot change after creation: Fjord's controller.quorum.voters is static")),
        case(cl, with(&c, "/spec/voters", json!(3)), Some(with(&c, "/spec/voters", json!(1))), Some("voters cannot change after creation: Fjord's controller.quorum.voters is static")),
        case(
            cl,
            with(&with(&c, "/status/voters", json!([0, 1, 2])), "/spec/replicas", json!(2)),
            None,
            Some("replicas cannot go below the number of metadata-quorum voters (status.voters)"),
        ),
        case(
            cl,
            with(&c, "/spec/config/node.id", json!("7")),
            None,
            Some("config cannot set properties the operator manages: node.id, broker.id, process.roles, controller.quorum.voters, controller.listener.names, listeners, advertised.listeners, inter.broker.listener.name, log.dirs, log.dir, cluster.id, broker.rack, fjord.http.listen, fjord.metrics.granularity"),
        ),
        case(
            cl,
            with(&c, "/spec/config/fjord.metrics.granularity", json!("partition")),
            None,
            Some("config cannot set properties the operator manages: node.id, broker.id, process.roles, controller.quorum.voters, controller.listener.names, listeners, advertised.listeners, inter.broker.listener.name, log.dirs, log.dir, cluster.id, broker.rack, fjord.http.listen, fjord.metrics.granularity"),
        ),
        case(cl, with(&c, "/spec/storage/size", json!("40Gi")), Some(c.clone()), Some("storage cannot change after creation: it is the StatefulSet's volume claim template")),
        case(cl, with(&c, "/spec/storage/storageClassName", json!("fast")), Some(c.clone()), Some("storage cannot change after creation: it is the StatefulSet's volume claim template")),
        case(cl, with(&c, "/spec/rack/topologyKey", json!("")), None, Some("rack.topologyKey must not be empty")),
        case(cl, with(&c, "/spec/listeners/external/port", json!(9092)), None, Some("the internal and external listeners need different ports")),
        case(cl, with(&c, "/spec/listeners/internal/port", json!(0)), None, Some("port must be between 1 and 65535")),
        case(cl, with(&c, "/spec/listeners/external/port", json!(65536)), None, Some("port must be between 1 and 65535")),
        case(cl, with(&c, "/spec/listeners/external/nodePortBase", json!(0)), None, Some("nodePortBase must be between 1 and 65535")),
        case(cl, with(&c, "/spec/listeners/internal/port", json!(9093)), None, Some("ports 9093 (controller listener) and 9644 (metrics and health) are taken")),
        case(cl, with(&c, "/spec/listeners/external/port", json!(9644)), None, Some("ports 9093 (controller listener) and 9644 (metrics and health) are taken")),
        // Cluster: changes that must stay allowed
        case(cl, with(&c, "/spec/replicas", json!(5)), Some(c.clone()), None),
        case(cl, with(&c, "/spec/image", json!("fjord/broker:0.2.0")), Some(c.clone()), None),
        case(cl, with(&c, "/spec/config/log.retention.hours", json!("24")), Some(c.clone()), None),
        case(cl, with(&c, "/spec/listeners/external", Value::Null), Some(c.clone()), None),
        case(cl, with(&with(&c, "/status/voters", json!([0, 1, 2])), "/spec/replicas", json!(4)), None, None),
        case(cl, with(&c, "/spec/voters", json!(3)), None, None),
        // Topic
        case(
            tp,
            with(&with(&t, "/spec/topicName", Value::Null), "/metadata/name", long(250)),
            None,
            Some("metadata.name is longer than Kafka's 249-character limit: set spec.topicName"),
        ),
        case(tp, with(&t, "/spec/cluster", json!("")), None, Some("cluster must name a Cluster")),
        case(tp, with(&t, "/spec/cluster", json!("other")), Some(t.clone()), Some("cluster cannot change: a Topic cannot move between clusters")),
        case(tp, with(&t, "/spec/topicName", json!("orders v1")), None, Some("topicName may only contain ASCII letters, digits, '.', '_' and '-'")),
        case(tp, with(&t, "/spec/topicName", json!("orders/1")), None, Some("topicName may only contain ASCII letters, digits, '.', '_' and '-'")),
        case(tp, with(&t, "/spec/topicName", long(250)), None, Some("topicName is at most 249 characters")),
        case(tp, with(&t, "/spec/topicName", json!(".")), None, Some("topicName cannot be '.' or '..'")),
        case(tp, with(&t, "/spec/topicName", json!("..")), None, Some("topicName cannot be '.' or '..'")),
        case(tp, with(&t, "/spec/topicName", json!("Orders_v2")), Some(t.clone()), Some("topicName cannot change: Kafka cannot rename a topic; create a new Topic instead")),
        case(tp, with(&t, "/spec/topicName", Value::Null), Some(t.clone()), Some("topicName cannot change: Kafka cannot rename a topic; create a new Topic instead")),
        case(tp, t.clone(), Some(with(&t, "/spec/topicName", Value::Null)), Some("topicName cannot change: Kafka cannot rename a topic; create a new Topic instead")),
        case(tp, with(&t, "/spec/partitions", json!(0)), None, Some("partitions must be at least 1")),
        case(tp, with(&t, "/spec/partitions", json!(6)), Some(t.clone()), Some("partitions can only be increased: Kafka cannot remove partitions")),
        case(tp, with(&t, "/spec/replicationFactor", json!(0)), None, Some("replicationFactor must be between 1 and 32")),
        case(tp, with(&t, "/spec/replicationFactor", json!(33)), None, Some("replicationFactor must be between 1 and 32")),
        case(
            tp,
            with(&t, "/spec/replicationFactor", json!(2)),
            Some(t.clone()),
            Some("replicationFactor cannot change: Kafka has no topic config for it (it takes a partition reassignment)"),
        ),
        // Topic: changes that must stay allowed
        case(tp, with(&t, "/spec/partitions", json!(24)), Some(t.clone()), None),
        case(tp, with(&t, "/spec/config/retention.ms", json!("3600000")), Some(t.clone()), None),
        case(tp, with(&t, "/spec/deletionPolicy", json!("Delete")), Some(t.clone()), None),
        case(tp, with(&t, "/metadata/name", long(249)), None, None),
        case(tp, with(&t, "/spec/topicName", json!("a.b_c-D.9")), None, None),
    ]
}

#[test]
fn each_case_breaks_exactly_the_rule_it_names() {
    let mut failures = Vec::new();
    for (i, c) in cases().iter().enumerate() {
        let got = violations(c.file, &c.object, c.old.as_ref());
        let want: Vec<String> = c.expect.into_iter().map(String::from).collect();
        if got != want {
            failures.push(format!("case {i} ({}): expected {want:?}, got {got:?}", c.file));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_rule_has_a_message_and_a_case_that_breaks_it() {
    let tested: BTreeSet<&str> = cases().iter().filter_map(|c| c.expect).collect();
    let rules = all_rules();
    assert!(rules.len() >= 20, "found only {} rules: is the schema walk broken?", rules.len());
    for (path, _, rule, message) in &rules {
        assert!(!message.is_empty(), "{path}: rule `{rule}` has no message");
        assert!(tested.contains(message.as_str()), "{path}: no test case breaks rule `{rule}` ({message})");
    }
}

/// kube-cel's cost estimate is a coarse version of the API server's (which refuses a CRD
/// whose rule may cost more than a million units); it still catches an unbounded list
/// walk. Its scope check is skipped: it mistakes comprehension variables (`k` in
/// `self.all(k, ...)`) for free ones.
#[test]
fn rules_fit_the_cost_budget() {
    for (path, node, rule, _) in all_rules() {
        let warnings: Vec<_> = analyze_rule(&rule, &compile_schema(&node), ScopeContext::CrdValidation)
            .into_iter()
            .filter(|w| w.kind != WarningKind::WrongScope)
            .collect();
        assert!(warnings.is_empty(), "{path}: rule `{rule}`: {warnings:?}");
    }
}

#[test]
fn examples_deserialize_without_unknown_fields_and_pass_the_rules() {
    fn assert_known(example: &Value, typed: &Value, path: &str) {
        match (example, typed) {
            (Value::Object(e), Value::Object(t)) => {
                for (key, value) in e {
                    let child = format!("{path}.{key}");
                    let known = t.get(key).unwrap_or_else(|| panic!("{child} is not a field of the type (typo?)"));
                    assert_known(value, known, &child);
                }
            }
            (Value::Array(e), Value::Array(t)) => e.iter().zip(t).for_each(|(e, t)| assert_known(e, t, path)),
            _ => {}
        }
    }
    for file in ["cluster.yaml", "topic.yaml"] {
        let text = std::fs::read_to_string(root().join("examples").join(file)).unwrap();
        let value = example(file);
        let typed = if file == "cluster.yaml" {
            serde_json::to_value(serde_saphyr::from_str::<Cluster>(&text).unwrap()).unwrap()
        } else {
            serde_json::to_value(serde_saphyr::from_str::<Topic>(&text).unwrap()).unwrap()
        };
        assert_known(&value, &typed, file);
        assert_eq!(violations(file, &value, None), Vec::<String>::new(), "{file}");
        assert_eq!(violations(file, &value, Some(&value)), Vec::<String>::new(), "{file} updated unchanged");
        assert_eq!(violations(file, &typed, Some(&typed)), Vec::<String>::new(), "{file} as serialized by the types");
    }
}

#[test]
fn committed_yaml_matches_the_types() {
    let fix = "run `cargo run -p fjord-crds --bin crdgen` and commit the result";
    for fjord_crds::CrdFile { file, crd } in fjord_crds::crds() {
        let want = fjord_crds::to_yaml(&crd);
        for dir in [root().to_path_buf(), root().join("../charts/fjord-operator/crds")] {
            let path = dir.join(file);
            let have = std::fs::read_to_string(&path).unwrap_or_default();
            if have != want {
                let line = have
                    .lines()
                    .zip(want.lines())
                    .position(|(a, b)| a != b)
                    .unwrap_or(have.lines().count().min(want.lines().count()));
                panic!("{} differs from the types from line {}: {fix}", path.display(), line + 1);
            }
        }
    }
}

#[test]
fn names_columns_and_subresources() {
    for fjord_crds::CrdFile { file, crd } in fjord_crds::crds() {
        let (plural, short) = if file == "cluster.yaml" { ("clusters", "fjc") } else { ("topics", "fjt") };
        assert_eq!(crd.metadata.name.as_deref(), Some(format!("{plural}.fjord.dev").as_str()));
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.short_names, Some(vec![short.to_string()]));
        assert_eq!(crd.spec.names.categories, Some(vec!["fjord".to_string()]));
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.subresources.as_ref().unwrap().status.is_some());
        let columns: Vec<&str> = version.additional_printer_columns.iter().flatten().map(|c| c.name.as_str()).collect();
        let want: &[&str] = if file == "cluster.yaml" {
            &["Replicas", "Ready", "Status", "Bootstrap", "Age"]
        } else {
            &["Cluster", "Topic", "Partitions", "RF", "Ready", "Age"]
        };
        assert_eq!(columns, want);
    }
}
