//! The Kubernetes manifests (`deploy/kubernetes`, issue "Operate it"), checked without a
//! cluster: every document against the Kubernetes API schema of its kind (the `k8s-openapi`
//! types, generated from the API's OpenAPI spec: a document must decode, and decoding and
//! encoding it again must give it back whole — a misspelt or misplaced field is dropped on the
//! way and caught), and against the cluster.toml its ConfigMap carries: a StatefulSet and a
//! headless Service per site whose pod DNS name is the site's `addr`, a Deployment and a
//! Service per proxy, ports, selectors, mounts and the unprivileged user.
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Container, Namespace, PodSpec, PodTemplateSpec, Service};
use meridian_replica::config::ClusterConfig;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// Every YAML document of every manifest (not the kustomization), with its file name.
fn documents() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| p.file_name().unwrap() != "kustomization.yaml")
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        for d in serde_yaml::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(d)
                .unwrap_or_else(|e| panic!("{name}: not YAML: {e}"));
            if !v.is_null() {
                out.push((name.clone(), v));
            }
        }
    }
    out
}

/// Where `back` (the document decoded and encoded again) lost or changed something of `doc`.
fn lost(doc: &Value, back: &Value, at: &str, out: &mut Vec<String>) {
    match (doc, back) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                match b.get(k) {
                    Some(w) => lost(v, w, &format!("{at}.{k}"), out),
                    None => out.push(format!("{at}.{k} is not in the schema")),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                lost(v, w, &format!("{at}[{i}]"), out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(format!("{at}: {a} became {b}")),
    }
}

/// Decodes `doc` as `T` and requires the round trip to keep all of it.
fn strict<T: DeserializeOwned + Serialize>(doc: &Value) -> Result<T, String> {
    let t: T = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&t).unwrap();
    let mut out = Vec::new();
    lost(doc, &back, "", &mut out);
    if out.is_empty() {
        Ok(t)
    } else {
        Err(out.join("; "))
    }
}

#[derive(Default)]
struct Manifests {
    namespaces: Vec<Namespace>,
    services: BTreeMap<String, Service>,
    statefulsets: BTreeMap<String, StatefulSet>,
    deployments: BTreeMap<String, Deployment>,
}

fn load() -> Manifests {
    let mut m = Manifests::default();
    for (file, doc) in documents() {
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        let api = doc["apiVersion"].as_str().unwrap_or_default().to_string();
        let name = doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let what = format!("{file}: {api} {kind} '{name}'");
        let fail = |e: String| -> ! { panic!("{what} does not match the Kubernetes schema: {e}") };
        match (api.as_str(), kind.as_str()) {
            ("v1", "Namespace") => m.namespaces.push(strict(&doc).unwrap_or_else(|e| fail(e))),
            ("v1", "Service") => {
                m.services
                    .insert(name, strict(&doc).unwrap_or_else(|e| fail(e)));
            }
            ("apps/v1", "StatefulSet") => {
                m.statefulsets
                    .insert(name, strict(&doc).unwrap_or_else(|e| fail(e)));
            }
            ("apps/v1", "Deployment") => {
                m.deployments
                    .insert(name, strict(&doc).unwrap_or_else(|e| fail(e)));
            }
            _ => panic!("{what}: a kind this check does not know"),
        }
        if kind != "Namespace" {
            assert_eq!(doc["metadata"]["namespace"], "meridian", "{what}");
        }
    }
    m
}

fn config() -> ClusterConfig {
    // The ConfigMap is generated from this file (kustomization.yaml); certificates resolve
    // next to it, as they do at /etc/meridian in the pods.
    ClusterConfig::load(&dir().join("cluster.toml")).expect("deploy/kubernetes/cluster.toml")
}

fn pod(t: &PodTemplateSpec) -> &PodSpec {
    t.spec.as_ref().expect("a pod spec")
}

fn port(c: &Container, name: &str) -> i32 {
    c.ports
        .as_ref()
        .and_then(|ps| ps.iter().find(|p| p.name.as_deref() == Some(name)))
        .unwrap_or_else(|| panic!("container {} has no port '{name}'", c.name))
        .container_port
}

/// What a site's or proxy's pod must have: the config and certificate mounts, the user.
fn check_pod(what: &str, t: &PodTemplateSpec, cfg: &ClusterConfig) {
    let p = pod(t);
    let sc = p.security_context.as_ref().expect("a pod security context");
    assert_eq!(sc.run_as_non_root, Some(true), "{what}");
    assert_eq!(sc.run_as_user, Some(65532), "{what}: the image's user");
    assert_eq!(sc.fs_group, Some(65532), "{what}: volumes writable by it");
    let c = &p.containers[0];
    let mounts = c.volume_mounts.as_ref().expect("mounts");
    let mount = |path: &str| {
        mounts
            .iter()
            .find(|m| m.mount_path == path)
            .unwrap_or_else(|| panic!("{what}: nothing mounted at {path}"))
    };
    let vol = |name: &str| {
        p.volumes
            .as_ref()
            .and_then(|vs| vs.iter().find(|v| v.name == name))
            .unwrap_or_else(|| panic!("{what}: no volume '{name}'"))
    };
    let conf = mount("/etc/meridian/cluster.toml");
    assert_eq!(conf.sub_path.as_deref(), Some("cluster.toml"), "{what}");
    let cm = vol(&conf.name).config_map.as_ref().expect("a ConfigMap");
    assert_eq!(cm.name, "meridian-config", "{what}");
    let certs = Path::new("/etc/meridian").join(&cfg.tls.cert_dir);
    let m = mount(certs.to_str().unwrap());
    let secret = vol(&m.name).secret.as_ref().expect("a Secret");
    assert_eq!(
        secret.secret_name.as_deref(),
        Some("meridian-certs"),
        "{what}"
    );
    let mode = secret.default_mode.expect("a mode for the keys");
    assert_eq!(mode & 0o007, 0, "{what}: keys must not be world-readable");
    assert_eq!(mode & 0o040, 0o040, "{what}: readable by the pod's group");
    let ca = Path::new("/etc/meridian").join(&cfg.tls.ca);
    assert!(
        ca.starts_with(&certs),
        "{what}: the CA comes with the Secret"
    );
    let args = c.args.as_ref().expect("args");
    assert_eq!(
        args.windows(2)
            .find(|w| w[0] == "--config")
            .map(|w| w[1].as_str()),
        Some("/etc/meridian/cluster.toml"),
        "{what}"
    );
}

fn selects(svc: &Service, t: &PodTemplateSpec) -> bool {
    let sel = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .expect("a selector");
    let labels = t
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref())
        .expect("pod labels");
    sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Every port of the Service reaches a named port of the container.
fn check_service_ports(what: &str, svc: &Service, c: &Container) {
    for sp in svc.spec.as_ref().unwrap().ports.as_ref().unwrap() {
        match &sp.target_port {
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(n)) => {
                assert_eq!(port(c, n), sp.port, "{what}: port {n}");
            }
            other => panic!("{what}: target ports are named, got {other:?}"),
        }
    }
}

#[test]
fn every_manifest_matches_the_kubernetes_schema_and_the_cluster_config() {
    let m = load();
    let cfg = config();
    assert_eq!(m.namespaces.len(), 1);
    assert_eq!(cfg.sites.len(), 5);
    assert_eq!(
        m.statefulsets.len(),
        cfg.sites.len(),
        "one StatefulSet per site"
    );
    assert_eq!(
        m.deployments.len(),
        cfg.proxies.len(),
        "one Deployment per proxy"
    );
    for s in &cfg.sites {
        let name = format!("site-{}", s.name);
        let what = format!("site {}", s.name);
        let sts = &m.statefulsets[&name];
        let spec = sts.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(1), "{what}: one replica per site");
        let svc = &m.services[&spec.service_name.clone().expect("a governing service")];
        let svc_spec = svc.spec.as_ref().unwrap();
        assert_eq!(
            svc_spec.cluster_ip.as_deref(),
            Some("None"),
            "{what}: headless"
        );
        assert!(
            selects(svc, &spec.template),
            "{what}: the Service selects the pod"
        );
        // The name peers dial is the pod's stable DNS name, and the port is the container's.
        let pod_dns = format!(
            "{}-0.{}",
            sts.metadata.name.as_deref().unwrap(),
            svc.metadata.name.as_deref().unwrap()
        );
        assert_eq!(s.addr.host(), pod_dns, "{what}: addr");
        let c = &pod(&spec.template).containers[0];
        assert_eq!(port(c, "grpc"), s.addr.port() as i32, "{what}");
        assert_eq!(
            s.listen_addr().ip().to_string(),
            "0.0.0.0",
            "{what}: binds the pod"
        );
        assert_eq!(
            port(c, "metrics"),
            s.metrics_addr.expect("metrics").port() as i32,
            "{what}"
        );
        check_service_ports(&what, svc, c);
        let args = c.args.as_ref().unwrap();
        assert!(
            args.windows(2).any(|w| w[0] == "--site" && w[1] == s.name),
            "{what}: {args:?}"
        );
        check_pod(&what, &spec.template, &cfg);
        // Its data on its own volume, where the config says.
        let claims = spec.volume_claim_templates.as_ref().expect("a volume");
        let data = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == claims[0].metadata.name.clone().unwrap())
            .expect("the claim is mounted");
        assert!(
            s.data_dir.starts_with(&data.mount_path),
            "{what}: data_dir {} outside the volume at {}",
            s.data_dir.display(),
            data.mount_path
        );
    }
    for p in &cfg.proxies {
        let what = format!("proxy {}", p.name);
        let d = &m.deployments[&p.name];
        let spec = d.spec.as_ref().unwrap();
        let svc = &m.services[&p.name];
        assert!(
            selects(svc, &spec.template),
            "{what}: the Service selects the pod"
        );
        let c = &pod(&spec.template).containers[0];
        assert_eq!(port(c, "https"), p.http_addr.port() as i32, "{what}");
        assert_eq!(
            port(c, "grpc"),
            p.grpc_addr.expect("grpc").port() as i32,
            "{what}"
        );
        assert_eq!(
            port(c, "metrics"),
            p.metrics_addr.expect("metrics").port() as i32,
            "{what}"
        );
        check_service_ports(&what, svc, c);
        let args = c.args.as_ref().unwrap();
        assert!(
            args.windows(2).any(|w| w[0] == "--name" && w[1] == p.name),
            "{what}: {args:?}"
        );
        check_pod(&what, &spec.template, &cfg);
    }
    // No Service selects pods of another region's site or proxy.
    for (name, svc) in &m.services {
        let n = m
            .statefulsets
            .values()
            .map(|s| &s.spec.as_ref().unwrap().template)
            .chain(
                m.deployments
                    .values()
                    .map(|d| &d.spec.as_ref().unwrap().template),
            )
            .filter(|t| selects(svc, t))
            .count();
        assert_eq!(n, 1, "Service {name} selects {n} workloads");
    }
    // The kustomization lists every manifest and generates the ConfigMap from cluster.toml.
    let k: Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir().join("kustomization.yaml")).unwrap())
            .unwrap();
    let mut listed: Vec<String> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    listed.sort();
    let mut files: Vec<String> = documents().into_iter().map(|(f, _)| f).collect();
    files.dedup();
    files.sort();
    assert_eq!(listed, files);
    assert_eq!(k["configMapGenerator"][0]["name"], "meridian-config");
    assert_eq!(k["configMapGenerator"][0]["files"][0], "cluster.toml");
}

#[test]
fn the_schema_check_refuses_what_kubernetes_would() {
    let (_, doc) = documents()
        .into_iter()
        .find(|(_, d)| d["kind"] == "StatefulSet")
        .unwrap();
    assert!(strict::<StatefulSet>(&doc).is_ok());
    // A misspelt field (Kubernetes drops or refuses it; either way it is a bug).
    let mut typo = doc.clone();
    typo["spec"]["replica"] = Value::from(1);
    let e = strict::<StatefulSet>(&typo).unwrap_err();
    assert!(e.contains(".spec.replica is not in the schema"), "{e}");
    // A field at the wrong level.
    let mut misplaced = doc.clone();
    misplaced["spec"]["template"]["spec"]["containers"][0]["runAsUser"] = Value::from(0);
    assert!(strict::<StatefulSet>(&misplaced).is_err());
    // A wrong type.
    let mut wrong = doc.clone();
    wrong["spec"]["replicas"] = Value::from("one");
    assert!(strict::<StatefulSet>(&wrong).is_err());
    // A document of one kind is not another.
    assert!(strict::<Service>(&doc).is_err());
}
