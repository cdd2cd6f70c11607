//! deploy/kubernetes: every overlay renders with `kubectl kustomize`, passes
//! `kubernetes-validate --strict` against the oldest and newest Kubernetes
//! versions named in [`VERSIONS`], and its turnd configuration, filled in as
//! the pod spec fills it (node address and name, the Secret's files and
//! keys), passes `turnd check-config`'s checks. The workloads drain before
//! they are killed, run read-only, non-root, with CAP_NET_BIND_SERVICE only.
//! No cluster is involved: nothing here is applied anywhere.

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// The Kubernetes versions the rendered manifests are validated against.
const VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];
const OVERLAYS: [&str; 3] = ["daemonset", "deployment", "monitoring"];

fn have(cmd: &str, arg: &str) -> bool {
    Command::new(cmd).arg(arg).output().is_ok_and(|o| o.status.success())
}

/// Whether the tools are here; a missing one is a visible skip, and a
/// failure under CI=true.
fn tools() -> bool {
    let missing: Vec<&str> = [("kubectl", "help"), ("kubernetes-validate", "--version")]
        .into_iter()
        .filter(|(c, a)| !have(c, a))
        .map(|(c, _)| c)
        .collect();
    if missing.is_empty() {
        return true;
    }
    common::server::skip(&format!(
        "{missing:?} missing (bin/test installs kubectl and PyPI kubernetes-validate)"
    ));
    false
}

fn render(overlay: &str) -> (String, Vec<Value>) {
    let dir = format!("{}/deploy/kubernetes/overlays/{overlay}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("kubectl")
        .args(["kustomize", &dir])
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "kubectl kustomize {overlay}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).expect("UTF-8");
    let mut py = Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    py.stdin
        .take()
        .expect("stdin")
        .write_all(yaml.as_bytes())
        .expect("write");
    let out = py.wait_with_output().expect("python3 runs");
    assert!(out.status.success(), "YAML to JSON");
    let docs: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON");
    (yaml, docs)
}

fn kind<'a>(docs: &'a [Value], k: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == k).collect()
}

fn validate(overlay: &str, yaml: &str, dir: &Path) {
    let file = dir.join(format!("{overlay}.yaml"));
    std::fs::write(&file, yaml).expect("write");
    for v in VERSIONS {
        let out = Command::new("kubernetes-validate")
            .args(["--strict", "--quiet", "-k", v])
            .arg(&file)
            .output()
            .expect("kubernetes-validate");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{overlay} against Kubernetes {v}:\n{said}");
        // Only the Prometheus Operator's CRD has no schema here.
        for line in said.lines().filter(|l| !l.trim().is_empty()) {
            assert!(
                line.contains("Couldn't find schema for kind ServiceMonitor"),
                "{overlay} against Kubernetes {v}: {line}"
            );
        }
    }
}

/// A value for each variable the pod spec puts in the environment.
fn sample_env(container: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in container["env"].as_array().expect("env") {
        let name = e["name"].as_str().expect("name").to_string();
        let value = if let Some(v) = e["value"].as_str() {
            v.to_string()
        } else if e["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP" {
            "203.0.113.10".into()
        } else if e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName" {
            "worker-1".into()
        } else if let Some(key) = e["valueFrom"]["secretKeyRef"]["key"].as_str() {
            format!("sample-{key}-0123456789")
        } else {
            panic!("an environment variable from an unknown source: {e}");
        };
        out.push((name, value));
    }
    out
}

fn check_overlay(overlay: &str, dir: &Path) {
    let (yaml, docs) = render(overlay);
    validate(overlay, &yaml, dir);
    let config = kind(&docs, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"] == "turnd-config")
        .expect("the turnd-config ConfigMap");
    let toml = config["data"]["turnd.toml"].as_str().expect("turnd.toml");
    // Secrets come from the Secret (files, or the environment), never inline.
    assert!(
        !toml.contains("static-auth-secrets"),
        "{overlay}: an inline REST secret"
    );
    for line in toml.lines().map(str::trim) {
        if ["token =", "access-key =", "token="]
            .iter()
            .any(|k| line.starts_with(k))
        {
            assert!(
                line.contains("\"${"),
                "{overlay}: a secret inline in the ConfigMap: {line}"
            );
        }
    }
    assert!(kind(&docs, "Secret").is_empty(), "no Secret in the repository's output");
    for k in ["PodDisruptionBudget", "NetworkPolicy", "Namespace"] {
        assert_eq!(kind(&docs, k).len(), 1, "{overlay}: one {k}");
    }
    let workloads: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "DaemonSet" || d["kind"] == "Deployment")
        .collect();
    assert_eq!(workloads.len(), 1, "{overlay}: one workload");
    let pod = &workloads[0]["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    // The configuration as this pod would read it.
    let env = sample_env(c);
    let expanded = turnd::config::expand_env(toml, |k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
        .unwrap_or_else(|e| panic!("{overlay}: {e:?}"));
    let secrets = dir.join(format!("{overlay}-secrets"));
    std::fs::create_dir_all(&secrets).expect("dir");
    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["secret"]["secretName"] == "turnd-secrets")
        .expect("the Secret mounted");
    for item in volume["secret"]["items"].as_array().expect("items") {
        let path = item["path"].as_str().expect("path");
        std::fs::write(secrets.join(path), format!("sample-{path}-0123456789abcdef\n")).expect("write");
    }
    let expanded = expanded
        .replace("/etc/turnd/secrets", &secrets.display().to_string())
        .replace(
            "/var/lib/turnd",
            &dir.join(format!("{overlay}-data")).display().to_string(),
        );
    let file = dir.join(format!("{overlay}.toml"));
    std::fs::write(&file, &expanded).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_turnd"))
        .arg("check-config")
        .arg(&file)
        .output()
        .expect("turnd");
    assert!(
        out.status.success(),
        "{overlay}: turnd check-config:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = turnd::config::Config::check(&file).expect("the same check in-process");
    assert!(!cfg.cluster.nodes.is_empty(), "a fleet");
    // A rolling update drains each pod before killing it.
    let grace = pod["terminationGracePeriodSeconds"].as_u64().expect("grace period");
    assert!(
        grace > cfg.drain_timeout.as_secs(),
        "{overlay}: grace {grace}s ≤ drain-timeout {:?}",
        cfg.drain_timeout
    );
    // Probes on the ops port, where turnd serves them.
    let ops = cfg.metrics.listen.first().expect("an ops listener").port();
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{overlay} {probe}");
        assert_eq!(c[probe]["httpGet"]["port"], ops, "{overlay} {probe}");
    }
    // Locked down.
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(sc["capabilities"]["add"], serde_json::json!(["NET_BIND_SERVICE"]));
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    // Every relay port the configuration uses is reachable.
    if pod["hostNetwork"] != true {
        let host_ports: Vec<u64> = c["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .filter(|p| p["protocol"] == "UDP")
            .filter_map(|p| p["hostPort"].as_u64())
            .collect();
        for port in cfg.relay.min_port..=cfg.relay.max_port {
            assert!(
                host_ports.contains(&u64::from(port)),
                "{overlay}: relay port {port} has no hostPort"
            );
        }
    }
    if overlay == "monitoring" {
        assert_eq!(kind(&docs, "ServiceMonitor").len(), 1);
    }
}

#[test]
fn every_overlay_renders_validates_and_its_config_checks() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    for o in OVERLAYS {
        check_overlay(o, dir.path());
    }
}
