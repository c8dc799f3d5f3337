#!/usr/bin/env python3
"""Checks deploy/kubernetes/ (`make test-kubernetes`).

1. Renders the base and every overlay with kustomize (`kubectl kustomize`, or `kustomize build`).
2. Validates every resource file of the base and the overlays, and every rendered document,
   against the Kubernetes OpenAPI schemas in strict mode (the kubernetes-validate package, which
   ships them), for each version in K8S_VERSIONS; and first checks that the validator does
   reject a document with an unknown field, so a validator that passes everything fails here.
3. Checks each rendering against authgate's own configuration: the ConfigMap's authgate.yaml
   passes `authgate -t` (with the Secret files it names present), the base's is
   conf/container.yaml byte for byte and an overlay's differs from it only by `fleet:`; the
   probes, ports and Services match the config's listeners; terminationGracePeriodSeconds
   exceeds shutdown.drain_delay + grace_period_seconds + graceful_shutdown_timeout_seconds;
   every Secret file the config reads is mounted from a Secret whose `kubectl create secret`
   command is documented; the security settings and the image's user agree.

Environment: AUTHGATE (default target/debug/authgate), K8S_VERSIONS (default "1.30.0 1.37.0").
Exits non-zero with every failed check listed.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
BASE = KUBE / "base"
OVERLAYS = sorted(p for p in (KUBE / "overlays").iterdir() if (p / "kustomization.yaml").exists())
AUTHGATE = os.environ.get("AUTHGATE", str(ROOT / "target" / "debug" / "authgate"))
VERSIONS = os.environ.get("K8S_VERSIONS", "1.30.0 1.37.0").split()

failures = []
passed = 0


def check(ok, what):
    global passed
    if ok:
        passed += 1
    else:
        failures.append(what)
        print(f"FAIL: {what}", flush=True)
    return ok


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def kustomize_command():
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    sys.exit(
        "test-kubernetes: needs kustomize: kubectl (which has it built in) or the kustomize "
        "binary on PATH; install one, then retry"
    )


def render(kustomize, folder):
    r = run(kustomize + [str(folder)])
    if r.returncode != 0:
        sys.exit(f"test-kubernetes: kustomize failed on {folder}:\n{r.stderr}")
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    return r.stdout, docs


def validate(path, label):
    cmd = [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet"]
    for v in VERSIONS:
        cmd += ["-k", v]
    r = run(cmd + [str(path)])
    out = (r.stdout + r.stderr).strip()
    check(r.returncode == 0, f"schema validation of {label}:\n{out}")


def duration(text):
    """Seconds in an authgate duration ("5s", "500ms", "1m"); 0 when absent."""
    if text is None:
        return 0.0
    total = 0.0
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)", str(text)):
        total += float(num) * units[unit]
    return total


def port_of(addr):
    return int(str(addr).rsplit(":", 1)[1])


def one(docs, kind, name):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    if not check(len(found) == 1, f"exactly one {kind}/{name} in the rendering"):
        return None
    return found[0]


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def documented_secrets():
    """Secret name -> keys, from the `kubectl create secret generic` commands in comments."""
    secrets = {}
    files = [BASE / "kustomization.yaml"] + [o / "kustomization.yaml" for o in OVERLAYS]
    for f in files:
        text = f.read_text()
        # Commands may continue over commented lines ending in a backslash.
        text = re.sub(r"\\\n#\s*", " ", text)
        for m in re.finditer(r"kubectl create secret generic (\S+)([^\n]*)", text):
            keys = re.findall(r"--from-(?:literal|file)=([\w.-]+)=", m.group(2))
            secrets.setdefault(m.group(1), set()).update(keys)
    return secrets


def check_rendering(label, docs, config_text, tmp):
    cfg = yaml.safe_load(config_text)
    dep = one(docs, "Deployment", "authgate")
    if dep is None:
        return
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    containers = {c["name"]: c for c in pod["containers"]}
    c = containers.get("authgate")
    if not check(c is not None, f"{label}: a container named authgate"):
        return
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}

    # The Deployment's shape.
    check(spec.get("replicas") == 2, f"{label}: 2 replicas")
    ru = spec.get("strategy", {}).get("rollingUpdate", {})
    check(
        spec.get("strategy", {}).get("type") == "RollingUpdate"
        and ru.get("maxUnavailable") == 0
        and ru.get("maxSurge") == 1,
        f"{label}: RollingUpdate with maxUnavailable 0, maxSurge 1",
    )
    check(selects(spec["selector"]["matchLabels"], labels), f"{label}: the selector matches the pods")
    check(
        bool(pod.get("topologySpreadConstraints") or pod.get("affinity", {}).get("podAntiAffinity")),
        f"{label}: replicas spread over nodes",
    )

    # The config file the container reads is the ConfigMap's, mounted as a folder.
    args = c.get("args", [])
    conf_path = args[args.index("-c") + 1] if "-c" in args else "/etc/authgate/authgate.yaml"
    conf_dir, conf_name = os.path.split(conf_path)
    m = mounts.get(conf_dir)
    if check(m is not None, f"{label}: {conf_dir} is mounted"):
        check("subPath" not in m, f"{label}: the config folder is mounted whole (a subPath never updates)")
        cm_name = volumes.get(m["name"], {}).get("configMap", {}).get("name")
        check(cm_name == "authgate-config", f"{label}: {conf_dir} is the ConfigMap authgate-config")
        cm = one(docs, "ConfigMap", "authgate-config")
        if cm is not None:
            check(cm["data"].get(conf_name) == config_text, f"{label}: the ConfigMap holds {conf_name}")

    # Security.
    psc = pod.get("securityContext", {})
    csc = c.get("securityContext", {})
    image_uid = int(re.search(r"^uid=(\d+)", (ROOT / "deploy" / "rootfs.sh").read_text(), re.M).group(1))
    check(psc.get("runAsNonRoot") is True, f"{label}: runAsNonRoot")
    check(
        psc.get("runAsUser") == image_uid and psc.get("runAsGroup") == image_uid,
        f"{label}: runAsUser/runAsGroup are the image's user {image_uid} (deploy/rootfs.sh)",
    )
    check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{label}: seccomp RuntimeDefault")
    check(csc.get("readOnlyRootFilesystem") is True, f"{label}: read-only root filesystem")
    check(csc.get("allowPrivilegeEscalation") is False, f"{label}: allowPrivilegeEscalation false")
    check(csc.get("capabilities", {}).get("drop") == ["ALL"], f"{label}: capabilities drop ALL")
    res = c.get("resources", {})
    check(
        all(k in res.get("requests", {}) for k in ("cpu", "memory"))
        and all(k in res.get("limits", {}) for k in ("cpu", "memory")),
        f"{label}: cpu and memory requests and limits",
    )

    # What the process writes goes to the emptyDir at /tmp; the access log to stderr.
    tmp_mount = mounts.get("/tmp")
    check(
        tmp_mount is not None and "emptyDir" in volumes.get(tmp_mount["name"], {}),
        f"{label}: /tmp is an emptyDir",
    )
    pg = cfg.get("pingora", {})
    for key in ("pid_file", "upgrade_sock"):
        check(str(pg.get(key, "")).startswith("/tmp/"), f"{label}: pingora.{key} is under /tmp")
    check("path" not in cfg.get("access_log", {}), f"{label}: the access log goes to stderr")
    check(cfg.get("reload", {}).get("watch") is True, f"{label}: reload.watch is on")

    # Ports and probes against the config's listeners.
    admin = cfg.get("admin", {})
    check(ports.get("admin") == port_of(admin.get("listen", ":0")), f"{label}: port admin is admin.listen's")
    check(ports.get("http") == port_of(cfg["listen"][0]["addr"]), f"{label}: port http is listen[0]'s")
    for addr in [admin.get("listen", "")] + [l["addr"] for l in cfg["listen"]]:
        check(addr.startswith("0.0.0.0:") or addr.startswith("[::]:"), f"{label}: {addr} listens on all interfaces")
    probes = {"readinessProbe": "/ready", "livenessProbe": "/health"}
    for probe, path in probes.items():
        p = c.get(probe, {}).get("httpGet", {})
        port = ports.get(p.get("port"), p.get("port"))
        check(p.get("path") == path and port == ports.get("admin"), f"{label}: {probe} is GET {path} on the admin port")
    ann = spec["template"]["metadata"].get("annotations", {})
    check(
        ann.get("prometheus.io/port") == str(ports.get("admin")) and ann.get("prometheus.io/path") == "/metrics",
        f"{label}: the Prometheus annotations name the admin port and /metrics",
    )
    for name, target in (("authgate", "http"), ("authgate-admin", "admin")):
        svc = one(docs, "Service", name)
        if svc is not None:
            check(selects(svc["spec"]["selector"], labels), f"{label}: Service {name} selects the pods")
            check(
                [p["targetPort"] for p in svc["spec"]["ports"]] == [target],
                f"{label}: Service {name} targets the port {target}",
            )
    pdb = one(docs, "PodDisruptionBudget", "authgate")
    if pdb is not None:
        check(pdb["spec"].get("minAvailable") == 1, f"{label}: PodDisruptionBudget minAvailable 1")
        check(selects(pdb["spec"]["selector"]["matchLabels"], labels), f"{label}: the PodDisruptionBudget selects the pods")

    # The drain's arithmetic.
    drain = duration(cfg.get("shutdown", {}).get("drain_delay"))
    grace = pg.get("grace_period_seconds", 300)
    stop = pg.get("graceful_shutdown_timeout_seconds", 5)
    tgps = pod.get("terminationGracePeriodSeconds", 30)
    check(drain > 0, f"{label}: shutdown.drain_delay is set")
    check(
        tgps > drain + grace + stop,
        f"{label}: terminationGracePeriodSeconds {tgps} > drain_delay {drain:g} + grace_period_seconds {grace} "
        f"+ graceful_shutdown_timeout_seconds {stop}",
    )
    rp = c.get("readinessProbe", {})
    out_after = rp.get("periodSeconds", 10) * rp.get("failureThreshold", 3)
    check(out_after < drain, f"{label}: readiness fails within the drain delay ({out_after} s < {drain:g} s)")
    lp = c.get("livenessProbe", {})
    dead_after = lp.get("periodSeconds", 10) * lp.get("failureThreshold", 3)
    check(
        dead_after > grace + stop,
        f"{label}: liveness does not fail while the listeners are closed ({dead_after} s > {grace} + {stop} s)",
    )

    # Secret files: each one the config reads is mounted from a documented Secret's key; then
    # `authgate -t` on the config, those paths pointing at stand-in files.
    secret_mounts = {
        path: volumes[m["name"]]["secret"]["secretName"]
        for path, m in mounts.items()
        if "secret" in volumes.get(m["name"], {})
    }
    documented = documented_secrets()
    files = sorted(set(re.findall(r"(?m)^\s*(?:token|secret|password)_file:\s*(/\S+)", config_text)))
    check(bool(files), f"{label}: the config reads its secrets from files")
    test_text = config_text
    for f in files:
        folder, key = os.path.split(f)
        secret = secret_mounts.get(folder)
        if check(secret is not None, f"{label}: {f} is in a mounted Secret"):
            check(
                key in documented.get(secret, set()),
                f"{label}: the key {key} of Secret {secret} is created by a documented `kubectl create secret`",
            )
        stand_in = Path(tmp) / label / f.lstrip("/")
        stand_in.parent.mkdir(parents=True, exist_ok=True)
        stand_in.write_text(os.urandom(32).hex() + "\n")
        test_text = test_text.replace(f, str(stand_in))
    for d in docs:
        for cont in d.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            for e in cont.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    check(
                        ref["key"] in documented.get(ref["name"], set()),
                        f"{label}: the key {ref['key']} of Secret {ref['name']} ({d['metadata']['name']}) is documented",
                    )
    conf_file = Path(tmp) / label / "authgate.yaml"
    conf_file.write_text(test_text)
    r = run([AUTHGATE, "-t", "-c", str(conf_file)])
    check(r.returncode == 0, f"{label}: `authgate -t` accepts the ConfigMap's authgate.yaml:\n{r.stdout}{r.stderr}")

    # Fleet mode: the Redis it names is the rendering's, and only authgate reaches it.
    fleet = cfg.get("fleet")
    if fleet:
        url = re.match(r"rediss?://([^:/]+)(?::(\d+))?", fleet["redis"]["url"])
        host, port = url.group(1), int(url.group(2) or 6379)
        svc = next((d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == host), None)
        if check(svc is not None, f"{label}: fleet.redis.url's host {host} is a Service of the rendering"):
            check(port in [p["port"] for p in svc["spec"]["ports"]], f"{label}: Service {host} has port {port}")
            backing = [
                d for d in docs
                if d["kind"] == "Deployment"
                and selects(svc["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
            ]
            check(len(backing) == 1, f"{label}: Service {host} selects one Deployment")
            for np in (d for d in docs if d["kind"] == "NetworkPolicy"):
                if backing and selects(np["spec"]["podSelector"]["matchLabels"], backing[0]["spec"]["template"]["metadata"]["labels"]):
                    froms = [f["podSelector"]["matchLabels"] for rule in np["spec"]["ingress"] for f in rule["from"]]
                    check(
                        all(selects(f, labels) for f in froms) and froms,
                        f"{label}: NetworkPolicy {np['metadata']['name']} admits authgate's pods only",
                    )


def main():
    if not Path(AUTHGATE).is_file():
        sys.exit(f"test-kubernetes: {AUTHGATE} is missing: run `cargo build --bin authgate` first")
    kustomize = kustomize_command()
    with tempfile.TemporaryDirectory(prefix="authgate-k8s-") as tmp:
        # The validator must fail on a bad document.
        bad = yaml.safe_load((BASE / "deployment.yaml").read_text())
        bad["spec"]["replicass"] = 2
        bad_file = Path(tmp) / "bad.yaml"
        bad_file.write_text(yaml.safe_dump(bad))
        cmd = [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", "-k", VERSIONS[0], str(bad_file)]
        check(run(cmd).returncode != 0, "the schema validator rejects a Deployment with an unknown field")

        # Every resource file as written (patches are partial: they are checked rendered).
        for folder in [BASE] + OVERLAYS:
            k = yaml.safe_load((folder / "kustomization.yaml").read_text())
            for res in k.get("resources", []):
                if (folder / res).is_file():
                    validate(folder / res, str((folder / res).relative_to(ROOT)))

        base_text = (BASE / "authgate.yaml").read_text()
        check(
            base_text == (ROOT / "conf" / "container.yaml").read_text(),
            "deploy/kubernetes/base/authgate.yaml is conf/container.yaml byte for byte",
        )
        base_cfg = yaml.safe_load(base_text)
        for folder in [BASE] + OVERLAYS:
            label = str(folder.relative_to(KUBE))
            text, docs = render(kustomize, folder)
            rendered = Path(tmp) / (label.replace("/", "-") + ".yaml")
            rendered.write_text(text)
            validate(rendered, f"the rendering of {label}")
            cm = one(docs, "ConfigMap", "authgate-config")
            if cm is None:
                continue
            config_text = cm["data"]["authgate.yaml"]
            if folder != BASE:
                cfg = yaml.safe_load(config_text)
                check(cfg.get("fleet") is not None, f"{label}: the ConfigMap turns fleet mode on")
                cfg.pop("fleet", None)
                check(cfg == base_cfg, f"{label}: authgate.yaml differs from the base's only by `fleet:`")
            check_rendering(label, docs, config_text, tmp)

    print(f"test-kubernetes: {passed} passed, {len(failures)} failed")
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
