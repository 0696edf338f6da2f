//! The Dockerfile and the Kubernetes manifests in `deploy/`: no cluster or
//! container engine is reachable here, so what can be checked is checked
//! with the real binary: the manifests parse, every flag they pass exists,
//! every environment variable they set is one cairn or its storage reads,
//! every Secret key, ConfigMap, volume and port they name is defined, the
//! configuration they mount passes `cairn config check` and has the
//! schedule the CronJob runs; the image's build steps run on this machine.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::{cairn_bin, project_dir};

/// Every document of every YAML file under deploy/kubernetes, with its file.
fn manifests() -> Vec<(String, Value)> {
    let dir = project_dir().join("deploy/kubernetes");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read manifest");
        let name = f.file_name().expect("name").to_string_lossy().into_owned();
        for d in serde_yaml_ng::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(d)
                .unwrap_or_else(|e| panic!("{name} does not parse: {e}"));
            if !v.is_null() {
                docs.push((name.clone(), v));
            }
        }
    }
    docs
}

fn kind(v: &Value) -> &str {
    v["kind"].as_str().unwrap_or("")
}

fn name(v: &Value) -> &str {
    v["metadata"]["name"].as_str().unwrap_or("")
}

/// The pod spec of a workload.
fn pod_spec(v: &Value) -> Option<&Value> {
    match kind(v) {
        "Deployment" | "StatefulSet" | "DaemonSet" | "Job" => Some(&v["spec"]["template"]["spec"]),
        "CronJob" => Some(&v["spec"]["jobTemplate"]["spec"]["template"]["spec"]),
        _ => None,
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().expect("a string argument").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The configuration the ConfigMap mounts, written to a file.
fn config_file(docs: &[(String, Value)], dir: &Path) -> std::path::PathBuf {
    let cm = docs
        .iter()
        .find(|(_, v)| kind(v) == "ConfigMap" && v["data"]["cairn.toml"].is_string())
        .expect("a ConfigMap with cairn.toml");
    let path = dir.join("cairn.toml");
    std::fs::write(&path, cm.1["data"]["cairn.toml"].as_str().expect("text")).expect("write");
    path
}

/// Whether `name` is an environment variable cairn reads: named in its
/// source, or one of the storage clients' (`AWS_*`, `GOOGLE_*`, `AZURE_*`),
/// or named by the configuration (`api_key_env`, `url_env`).
fn env_is_read(name: &str, config: &str) -> bool {
    if ["AWS_", "GOOGLE_", "AZURE_"]
        .iter()
        .any(|p| name.starts_with(p))
    {
        return true;
    }
    if config.contains(&format!("\"{name}\"")) {
        return true;
    }
    let quoted = format!("\"{name}\"");
    let mut stack = vec![project_dir().join("crates")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("crates") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs")
                && std::fs::read_to_string(&p)
                    .expect("source")
                    .contains(&quoted)
            {
                return true;
            }
        }
    }
    false
}

#[test]
fn the_kubernetes_manifests_parse_and_name_only_what_exists() {
    let docs = manifests();
    let kinds: BTreeSet<&str> = docs.iter().map(|(_, v)| kind(v)).collect();
    for k in [
        "CronJob",
        "Deployment",
        "Service",
        "Secret",
        "ConfigMap",
        "PersistentVolumeClaim",
    ] {
        assert!(kinds.contains(k), "no {k} in deploy/kubernetes: {kinds:?}");
    }
    for (file, v) in &docs {
        if kind(v) == "Kustomization" {
            // `kubectl apply -k`: every resource it lists is a file here.
            for r in strings(&v["resources"]) {
                assert!(
                    project_dir().join("deploy/kubernetes").join(&r).is_file(),
                    "{file} lists {r}, which is not in deploy/kubernetes"
                );
            }
            continue;
        }
        assert!(
            v["apiVersion"].is_string() && !name(v).is_empty(),
            "{file}: a document without apiVersion or metadata.name"
        );
    }
    let secret_keys: BTreeMap<&str, BTreeSet<String>> = docs
        .iter()
        .filter(|(_, v)| kind(v) == "Secret")
        .map(|(_, v)| {
            let mut keys = BTreeSet::new();
            for field in ["stringData", "data"] {
                if let Some(m) = v[field].as_object() {
                    keys.extend(m.keys().cloned());
                }
            }
            (name(v), keys)
        })
        .collect();
    let named = |k: &str| -> BTreeSet<&str> {
        docs.iter()
            .filter(|(_, v)| kind(v) == k)
            .map(|(_, v)| name(v))
            .collect()
    };
    let config_maps = named("ConfigMap");
    let claims = named("PersistentVolumeClaim");

    let tmp = tempfile::tempdir().expect("tempdir");
    let config = config_file(&docs, tmp.path());
    let config_text = std::fs::read_to_string(&config).expect("config");
    // The configuration passes `cairn config check`.
    let out = Command::new(cairn_bin())
        .args(["config", "check"])
        .arg(&config)
        .output()
        .expect("run cairn");
    let check = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the ConfigMap's cairn.toml fails `cairn config check`: {check}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut workloads = 0;
    for (file, v) in &docs {
        let Some(spec) = pod_spec(v) else { continue };
        workloads += 1;
        let volumes: BTreeMap<&str, &Value> = spec["volumes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| (x["name"].as_str().expect("volume name"), x))
                    .collect()
            })
            .unwrap_or_default();
        for (vname, vol) in &volumes {
            if let Some(cm) = vol["configMap"]["name"].as_str() {
                assert!(
                    config_maps.contains(cm),
                    "{file}: volume {vname} names ConfigMap {cm}, not defined"
                );
            }
            if let Some(c) = vol["persistentVolumeClaim"]["claimName"].as_str() {
                assert!(
                    claims.contains(c),
                    "{file}: volume {vname} names claim {c}, not defined"
                );
            }
        }
        let containers = spec["containers"].as_array().expect("containers");
        for c in containers {
            let cname = c["name"].as_str().unwrap_or("?");
            assert!(
                c["image"].as_str().is_some_and(|i| i.starts_with("cairn:")),
                "{file}: container {cname} runs {:?}, not the image the Dockerfile builds",
                c["image"]
            );
            for m in c["volumeMounts"].as_array().into_iter().flatten() {
                let vname = m["name"].as_str().expect("mount name");
                assert!(
                    volumes.contains_key(vname),
                    "{file}: {cname} mounts undefined volume {vname}"
                );
            }
            for e in c["env"].as_array().into_iter().flatten() {
                let ename = e["name"].as_str().expect("env name");
                assert!(
                    env_is_read(ename, &config_text),
                    "{file}: {cname} sets {ename}, which nothing in cairn reads"
                );
                let r = &e["valueFrom"]["secretKeyRef"];
                if let (Some(s), Some(k)) = (r["name"].as_str(), r["key"].as_str()) {
                    assert!(
                        secret_keys.get(s).is_some_and(|keys| keys.contains(k)),
                        "{file}: {cname}'s {ename} reads key {k} of Secret {s}, which the Secret does not have"
                    );
                }
            }
            // Every flag exists: clap parses the arguments before it
            // prints the help that `--help` at their end asks for, so an
            // unknown flag fails here.
            let args = strings(&c["args"]);
            assert!(!args.is_empty(), "{file}: {cname} passes no arguments");
            let out = Command::new(cairn_bin())
                .args(&args)
                .arg("--help")
                .output()
                .expect("run cairn");
            let help = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{file}: `cairn {}` is not a valid command line: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
            for flag in args.iter().filter(|a| a.starts_with("--")) {
                assert!(
                    help.contains(flag.as_str()),
                    "{file}: {flag} is not in the help of `cairn {}`",
                    args.join(" ")
                );
            }
            let value_of = |flag: &str| {
                args.iter()
                    .position(|a| a == flag)
                    .and_then(|i| args.get(i + 1))
                    .cloned()
            };
            // The config path is where the ConfigMap is mounted.
            if let Some(path) = value_of("--config") {
                let dir = Path::new(&path)
                    .parent()
                    .expect("dir")
                    .to_str()
                    .expect("utf-8");
                let mount = c["volumeMounts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|m| m["mountPath"].as_str() == Some(dir))
                    .unwrap_or_else(|| {
                        panic!("{file}: {cname} reads {path}, but nothing is mounted at {dir}")
                    });
                let vol = volumes[mount["name"].as_str().expect("name")];
                assert!(
                    vol["configMap"].is_object(),
                    "{file}: {dir} is not the ConfigMap"
                );
            }
            // The schedule the CronJob runs is in the configuration.
            if let Some(s) = value_of("--schedule") {
                assert!(
                    check.contains(&format!("schedule {s}:")),
                    "{file}: runs schedule {s}, which the ConfigMap does not define: {check}"
                );
            }
            // A probe asks the daemon for a path it serves.
            for probe in ["readinessProbe", "livenessProbe"] {
                if let Some(p) = c[probe]["httpGet"]["path"].as_str() {
                    assert_eq!(p, "/healthz", "{file}: {cname}'s {probe}");
                    let port = c[probe]["httpGet"]["port"].as_str().expect("named port");
                    assert!(
                        c["ports"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|x| x["name"] == port),
                        "{file}: {probe} port {port} is not a container port"
                    );
                }
            }
        }
    }
    assert!(workloads >= 2, "the Deployment and the CronJob");

    // The Service selects the daemon's pods and targets a port they name.
    let deploy = docs
        .iter()
        .find(|(_, v)| kind(v) == "Deployment")
        .expect("Deployment");
    let service = docs
        .iter()
        .find(|(_, v)| kind(v) == "Service")
        .expect("Service");
    let labels = deploy.1["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .expect("pod labels");
    for (k, val) in service.1["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(
            labels.get(k),
            Some(val),
            "the Service selects {k}={val}, not on the daemon's pods"
        );
    }
    let ports = &deploy.1["spec"]["template"]["spec"]["containers"][0]["ports"];
    for p in service.1["spec"]["ports"].as_array().expect("ports") {
        let target = &p["targetPort"];
        assert!(
            ports
                .as_array()
                .expect("ports")
                .iter()
                .any(|x| &x["name"] == target || &x["containerPort"] == target),
            "the Service targets port {target}, which the daemon does not expose"
        );
    }
    // The daemon's listen address is the port the container exposes.
    let args = strings(&deploy.1["spec"]["template"]["spec"]["containers"][0]["args"]);
    let listen = args
        .iter()
        .position(|a| a == "--listen")
        .map(|i| args[i + 1].clone())
        .expect("--listen");
    let port: u64 = listen
        .rsplit(':')
        .next()
        .expect("port")
        .parse()
        .expect("a port");
    assert!(
        ports
            .as_array()
            .expect("ports")
            .iter()
            .any(|x| x["containerPort"] == port),
        "the daemon listens on {listen}, which the container does not expose"
    );
}

/// The Dockerfile's build stage runs deploy/docker/build.sh and its runtime
/// stage copies what the script writes; the script runs here against this
/// build's binary: it strips it, finds no shared library the runtime image
/// lacks, and the stripped binary runs.
#[test]
fn the_image_build_steps_run_here() {
    let root = project_dir();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).expect("Dockerfile");
    let froms: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(
        froms.len(),
        2,
        "a build stage and a runtime stage: {froms:?}"
    );
    assert!(froms[0].contains(" AS build"), "{froms:?}");
    assert!(
        dockerfile.contains("deploy/docker/build.sh /out")
            && dockerfile.contains("COPY --from=build /out/cairn /usr/local/bin/cairn")
            && dockerfile.contains("ca-certificates")
            && dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/cairn\"]"),
        "the Dockerfile no longer builds with deploy/docker/build.sh into /out"
    );
    // The runtime stage's base is the one the script checks libraries for.
    assert!(froms[1].contains("debian:bookworm-slim"), "{froms:?}");

    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new("bash")
        .arg(root.join("deploy/docker/build.sh"))
        .arg(out_dir.path())
        .env("CAIRN_BIN", cairn_bin())
        .output()
        .expect("run build.sh");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "deploy/docker/build.sh failed: {log}");
    assert!(log.contains("== needs only: "), "{log}");
    let built = out_dir.path().join("cairn");
    let size = std::fs::metadata(&built).expect("stripped binary").len();
    let original = std::fs::metadata(cairn_bin()).expect("binary").len();
    assert!(
        size < original,
        "stripping did not shrink the binary: {size} >= {original}"
    );
    let v = Command::new(&built)
        .arg("--version")
        .output()
        .expect("run the stripped binary");
    assert!(
        v.status.success() && String::from_utf8_lossy(&v.stdout).starts_with("cairn "),
        "{v:?}"
    );
}
