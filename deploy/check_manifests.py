"""Offline checks of medmae's deployment files (run by the workspace test `tests/deploy.rs`).

Run: $MEDMAE_PYTHON deploy/check_manifests.py        (exit status 0 when every check passes)

1. Core Kubernetes kinds (deploy/kubernetes/*.yaml): `kubernetes-validate --strict` against the Kubernetes 1.29 and
   1.37 schemas (unknown fields are errors).
2. KServe kinds (deploy/kserve/*.yaml): JSON-schema validation against the CRD schemas of KServe v0.20.0
   (deploy/kserve/schemas/), made strict the way `kubectl --validate=strict` is: an unknown field is an error.
3. Consistency with medmae-serve and the image: the drain arithmetic (terminationGracePeriodSeconds covers preStop +
   drain grace + drain timeout; the liveness probe outlasts a drain), probe and container ports equal the listen
   port, non-root with the image's UID, read-only root filesystem with a writable $TMPDIR, models mounted read-only,
   GPU variants asking for `nvidia.com/gpu` and `--gpu`, image tags on the workspace version; the systemd unit's stop
   timeout against its TOML settings; the Containerfile's health check on its listen port.
4. Negative controls: a misspelled field, a too-short termination grace and a KServe typo must each be rejected, so
   the checks above cannot pass vacuously.
"""
import copy
import configparser
import gzip
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S_VERSIONS = ["1.29.0", "1.37.0"]
KSERVE_SCHEMAS = {
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "servingruntime.json.gz",
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservice.json.gz",
}
# Seconds the termination grace must exceed preStop + drain grace + drain timeout by.
MARGIN = 5
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class Report:
    def __init__(self):
        self.failures = []
        self.passed = 0

    def check(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failures.append(what)
        return ok


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


# --- 1. core kinds -----------------------------------------------------------------------------------------------

def kubernetes_validate(files, version):
    r = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", "-k", version, *map(str, files)],
        capture_output=True, text=True)
    return r.returncode == 0, (r.stdout + r.stderr).strip()


def check_core(rep, files):
    for v in K8S_VERSIONS:
        ok, out = kubernetes_validate(files, v)
        rep.check(ok, f"kubernetes-validate --strict -k {v}: {out}")


# --- 2. KServe kinds ---------------------------------------------------------------------------------------------

def strict(schema):
    """Reject unknown fields wherever the CRD lists the known ones (as the API server's strict field validation)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def kserve_validators():
    out = {}
    for key, name in KSERVE_SCHEMAS.items():
        with gzip.open(DEPLOY / "kserve" / "schemas" / name) as f:
            s = json.load(f)
        out[key] = jsonschema.Draft7Validator(strict(s["openAPIV3Schema"]))
    return out


def kserve_errors(validators, doc):
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key not in validators:
        return [f"no KServe schema for {key}"]
    errs = [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validators[key].iter_errors(doc)]
    meta = doc.get("metadata", {})
    if not DNS1123.match(meta.get("name", "")):
        errs.append(f"metadata.name {meta.get('name')!r} is not a DNS-1123 label")
    for field in ("labels", "annotations"):
        if not all(isinstance(v, str) for v in meta.get(field, {}).values()):
            errs.append(f"metadata.{field} values must be strings")
    return errs


def check_kserve(rep, validators, docs):
    runtimes = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServingRuntime"}
    for d in docs:
        errs = kserve_errors(validators, d)
        rep.check(not errs, f"{d['kind']}/{d['metadata']['name']}: {errs}")
        if d["kind"] != "InferenceService":
            continue
        model = d["spec"]["predictor"]["model"]
        rt = runtimes.get(model.get("runtime"))
        if not rep.check(rt is not None, f"InferenceService/{d['metadata']['name']}: runtime {model.get('runtime')!r} "
                                         f"is not defined in deploy/kserve"):
            continue
        formats = [f["name"] for f in rt["spec"]["supportedModelFormats"]]
        rep.check(model["modelFormat"]["name"] in formats,
                  f"InferenceService/{d['metadata']['name']}: model format not among {formats}")
        rep.check(model.get("protocolVersion") in rt["spec"]["protocolVersions"],
                  f"InferenceService/{d['metadata']['name']}: protocol not among the runtime's")


# --- 3. consistency ----------------------------------------------------------------------------------------------

def image_defaults():
    """ENV settings and the UID of the Containerfile."""
    text = (DEPLOY / "container" / "Containerfile").read_text()
    env = dict(re.findall(r"(MEDMAE_SERVE_[A-Z_]+|MEDMAE_SERVER)=(\S+)", text))
    uid = int(re.search(r"^ARG UID=(\d+)$", text, re.M).group(1))
    return env, uid, text


def settings(container, image_env):
    """Effective medmae-serve settings (snake_case) of a container: image ENV < container env < args."""
    s = {k[len("MEDMAE_SERVE_"):].lower(): v for k, v in image_env.items() if k.startswith("MEDMAE_SERVE_")}
    for e in container.get("env", []):
        if e["name"].startswith("MEDMAE_SERVE_"):
            s[e["name"][len("MEDMAE_SERVE_"):].lower()] = e.get("value", "")
        else:
            s["env:" + e["name"]] = e.get("value", "")
    args = list(container.get("args", []))
    while args:
        a = args.pop(0)
        if a.startswith("--"):
            if "=" in a:
                k, v = a[2:].split("=", 1)
            else:
                k, v = a[2:], args.pop(0)
            s[k.replace("-", "_")] = v
    return s


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def workspace_version():
    with open(ROOT / "Cargo.toml", "rb") as f:
        return tomllib.load(f)["workspace"]["package"]["version"]


def serving_containers(docs):
    """(where, container, pod-level facts) for every medmae-serve container in Deployments and ServingRuntimes."""
    isvc_grace = {}
    for d in docs:
        if d["kind"] == "InferenceService":
            p = d["spec"]["predictor"]
            isvc_grace.setdefault(p["model"]["runtime"], []).append((d["metadata"]["name"], p))
    out = []
    for d in docs:
        name = f"{d['kind']}/{d['metadata']['name']}"
        if d["kind"] == "Deployment":
            pod = d["spec"]["template"]["spec"]
            facts = {"grace": pod.get("terminationGracePeriodSeconds", 30), "pod": pod,
                     "annotations": d["spec"]["template"]["metadata"].get("annotations", {}),
                     "metrics_key": "prometheus.io/port"}
            out += [(name, c, facts) for c in pod["containers"]]
        elif d["kind"] == "ServingRuntime":
            users = isvc_grace.get(d["metadata"]["name"], [])
            for c in d["spec"]["containers"]:
                # The termination grace of each InferenceService using the runtime (KServe's default is 30 s).
                for isvc, pred in users or [(None, {})]:
                    facts = {"grace": pred.get("terminationGracePeriodSeconds", 30), "pod": pred,
                             "annotations": d["metadata"].get("annotations", {}),
                             "metrics_key": "prometheus.kserve.io/port"}
                    where = name + (f" used by InferenceService/{isvc}" if isvc else "")
                    out.append((where, c, facts))
    return out


def check_container(rep, where, c, facts, image_env, uid, version):
    s = settings(c, image_env)
    grace, timeout = float(s["drain_grace"]), float(s["drain_timeout"])
    pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    ok = rep.check(len(pre) == 2 and pre[0].endswith("/sleep"), f"{where}: preStop is not `sleep N`: {pre}")
    pre_s = float(pre[1]) if ok else 0.0
    need = pre_s + grace + timeout + MARGIN
    rep.check(facts["grace"] >= need,
              f"{where}: terminationGracePeriodSeconds {facts['grace']} < preStop {pre_s} + drain_grace {grace} "
              f"+ drain_timeout {timeout} + {MARGIN}")
    live = c.get("livenessProbe", {})
    rep.check(live.get("periodSeconds", 10) * live.get("failureThreshold", 3) >= grace + timeout,
              f"{where}: the liveness probe gives up before a drain ends")
    listen = port_of(s["listen"])
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        p = c.get(kind)
        if p is None:
            continue
        rep.check(p.get("grpc", {}).get("port") == listen and p["grpc"].get("service", "") == "",
                  f"{where}: {kind} is not a gRPC health check of \"\" on the listen port {listen}")
    rep.check(c.get("readinessProbe") is not None and c.get("livenessProbe") is not None,
              f"{where}: readiness and liveness probes are required")
    ports = {p["containerPort"] for p in c.get("ports", [])}
    rep.check(listen in ports, f"{where}: listen port {listen} is not a container port {sorted(ports)}")
    mport = facts["annotations"].get(facts["metrics_key"])
    rep.check(mport is not None and int(mport) == port_of(s["metrics_listen"]),
              f"{where}: {facts['metrics_key']} {mport} differs from metrics_listen {s['metrics_listen']}")
    pod_sc, sc = facts["pod"].get("securityContext", {}), c.get("securityContext", {})
    run_as = sc.get("runAsUser", pod_sc.get("runAsUser"))
    rep.check(sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True and run_as == uid,
              f"{where}: must run as non-root UID {uid} (the image's user), got {run_as}")
    rep.check(sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False,
              f"{where}: read-only root filesystem and no privilege escalation required")
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    tmp = s.get("env:TMPDIR")
    rep.check(tmp in mounts and not mounts[tmp].get("readOnly", False),
              f"{where}: TMPDIR {tmp} must be a writable volume (uploads are staged there)")
    repo = s.get("model_repository")
    if repo != "/mnt/models":  # KServe's storage initializer owns /mnt/models
        rep.check(repo in mounts and mounts[repo].get("readOnly") is True,
                  f"{where}: the model repository {repo} must be mounted read-only")
    res = c.get("resources", {})
    rep.check({"cpu", "memory"} <= set(res.get("requests", {})) and "memory" in res.get("limits", {}),
              f"{where}: cpu/memory requests and a memory limit are required")
    gpu = "nvidia.com/gpu" in res.get("limits", {})
    rep.check(gpu == (s.get("gpu") == "true"), f"{where}: nvidia.com/gpu and the gpu setting must go together")
    tag = c["image"].rsplit(":", 1)[1]
    want = version + ("-cuda" if gpu else "")
    rep.check(tag == want, f"{where}: image tag {tag} is not {want}")


def check_systemd(rep):
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(DEPLOY / "systemd" / "medmae-serve.service")
    svc = unit["Service"]
    with open(DEPLOY / "systemd" / "medmae-serve.toml", "rb") as f:
        cfg = tomllib.load(f)
    stop = float(svc["TimeoutStopSec"].rstrip("s"))
    need = cfg.get("drain_grace", 5.0) + cfg.get("drain_timeout", 30.0) + MARGIN
    rep.check(stop >= need, f"systemd: TimeoutStopSec {stop} < drain_grace + drain_timeout + {MARGIN}")
    rep.check(svc.get("KillSignal") == "SIGTERM" and svc.get("User") not in (None, "root"),
              "systemd: SIGTERM and a non-root user required")
    rep.check("--config /etc/medmae/serve.toml" in svc["ExecStart"], "systemd: ExecStart must read /etc/medmae/serve.toml")
    rep.check(cfg["model_repository"] in svc.get("ReadOnlyPaths", ""), "systemd: the models must be read-only")


def check_image(rep, image_env, text):
    port = port_of(image_env["MEDMAE_SERVE_LISTEN"])
    m = re.search(r'^HEALTHCHECK .*?CMD \[(.*?)\]', text, re.M | re.S)
    rep.check(m is not None and "medmae-client" in m.group(1) and '"health"' in m.group(1),
              "Containerfile: HEALTHCHECK must run `medmae-client health`")
    rep.check(port_of(image_env["MEDMAE_SERVER"]) == port,
              f"Containerfile: MEDMAE_SERVER (the health check's target) is not the listen port {port}")
    rep.check(re.search(r"^USER \$\{UID\}", text, re.M) is not None, "Containerfile: must switch to the non-root UID")


def consistency(rep, docs, image_env, uid, version):
    containers = serving_containers(docs)
    rep.check(len(containers) >= 4, f"expected the CPU/GPU Deployments and runtimes, found {len(containers)}")
    for where, c, facts in containers:
        check_container(rep, where, c, facts, image_env, uid, version)


# --- 4. negative controls ----------------------------------------------------------------------------------------

def negative_controls(rep, core_files, kserve_docs, validators, image_env, uid, version):
    with tempfile.TemporaryDirectory() as d:
        bad = Path(d) / "typo.yaml"
        bad.write_text(core_files[0].read_text().replace("terminationGracePeriodSeconds:", "terminationGracePeriodSecond:", 1))
        ok, _ = kubernetes_validate([bad], K8S_VERSIONS[-1])
        rep.check(not ok, "negative control: kubernetes-validate --strict accepted a misspelled field")
    rt = copy.deepcopy(next(d for d in kserve_docs if d["kind"] == "ServingRuntime"))
    rt["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    rep.check(kserve_errors(validators, rt), "negative control: the KServe schema accepted a misspelled field")
    docs = [copy.deepcopy(d) for d in load_docs(core_files[0])]
    dep = next(d for d in docs if d["kind"] == "Deployment")
    dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 20
    probe = Report()
    for where, c, facts in serving_containers([dep]):
        check_container(probe, where, c, facts, image_env, uid, version)
    rep.check(any("terminationGracePeriodSeconds" in f for f in probe.failures),
              "negative control: a 20 s termination grace passed the drain arithmetic")


def main():
    rep = Report()
    core_files = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
    kserve_files = sorted((DEPLOY / "kserve").glob("*.yaml"))
    rep.check(core_files and kserve_files, "no manifests found")
    check_core(rep, core_files)
    validators = kserve_validators()
    kserve_docs = [d for f in kserve_files for d in load_docs(f)]
    check_kserve(rep, validators, kserve_docs)
    image_env, uid, text = image_defaults()
    version = workspace_version()
    core_docs = [d for f in core_files for d in load_docs(f)]
    consistency(rep, core_docs + kserve_docs, image_env, uid, version)
    check_systemd(rep)
    check_image(rep, image_env, text)
    negative_controls(rep, core_files, kserve_docs, validators, image_env, uid, version)
    kinds = sorted({d["kind"] for d in core_docs + kserve_docs})
    print(f"{rep.passed} checks passed over {len(core_docs) + len(kserve_docs)} resources ({', '.join(kinds)})")
    for f in rep.failures:
        print("FAIL", f)
    sys.exit(1 if rep.failures else 0)


if __name__ == "__main__":
    main()
