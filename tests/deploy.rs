//! The deployment files under `deploy/` checked offline by `deploy/check_manifests.py`: the core Kubernetes kinds
//! with `kubernetes-validate --strict`, the KServe kinds against KServe's CRD schemas, and their agreement with
//! medmae-serve (drain timing, ports, user, read-only filesystem), the systemd unit and the Containerfile.

use std::process::Command;

use medmae_tests::repo_root;

#[test]
fn kubernetes_kserve_systemd_and_container_files_pass_the_offline_checks() {
    let script = repo_root().join("deploy/check_manifests.py");
    let out = Command::new(medmae_test_support::python())
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} failed:\n{stdout}\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    for kind in [
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ServingRuntime",
        "InferenceService",
    ] {
        assert!(stdout.contains(kind), "{kind} was not checked: {stdout}");
    }
}
