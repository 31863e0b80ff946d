#!/usr/bin/env python3
"""Checks the Kubernetes manifests in this directory beyond their schema.

The schema itself is checked by `kubernetes-validate --strict` (PyPI) in CI;
this script checks what a schema cannot: strict YAML (no duplicate keys), the
security settings every pod must have, that every ConfigMap, Secret, volume
and Service a pod needs exists, that each signer pod has a node config whose
id and region match the pod, that every daemon config carries the same
operator registry ([operators]: at least 2 operators, a quorum of 2..=m), that
the PodDisruptionBudget keeps the threshold up, and that the NetworkPolicies
admit nothing but what the design allows.

With --node-bin, every node config is also parsed and validated by the real
`permafrost-node` (an `init` into a scratch directory).

Usage: validate.py [--node-bin PATH/permafrost-node] [DIR]
Exit status 0 when every check passes; the failures are listed otherwise.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import tomllib

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
NAMESPACE = "permafrost"
OPERATORS_NS = "permafrost-operators"
CUSTODY_NS = "permafrost-custody"
PORT = 7443
UID = 10001
HEALTHCHECK = "/usr/local/bin/permafrost-healthcheck"
# Applied one node at a time with these placeholders replaced.
TEMPLATES = {"node-init-job.yaml": {"NODE_ID": "eu-west-0", "REGION": "eu-west"}}
# Any valid Ed25519 public key (RFC 8032 test vector 1), for the binary check.
TEST_KEY = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
# Stand-ins for the operators' placeholders in the binary check: distinct valid
# Ed25519 public keys (RFC 8032 test vectors 2, 3 and "1024"), never for use.
OPERATOR_PLACEHOLDER = re.compile(r"^REPLACE_OPERATOR_[A-Z0-9_]+_PUBLIC_KEY$")
OPERATOR_TEST_KEYS = [
    "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
    "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
    "278117fc144c72340f67d0f2316e8386ceffbf2b2428c9c51fef7c597f1d426e",
]
OPERATOR_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

errors = []


def fail(where, msg):
    errors.append(f"{where}: {msg}")


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML keeps the last one silently)."""


def _mapping(loader, node, deep=False):
    loader.flatten_mapping(node)
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load(directory):
    docs = []
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".yaml") or name == "kustomization.yaml":
            continue
        text = open(os.path.join(directory, name), encoding="utf-8").read()
        for placeholder, value in TEMPLATES.get(name, {}).items():
            text = text.replace(placeholder, value)
        try:
            for doc in yaml.load_all(text, Loader=StrictLoader):
                if doc is not None:
                    docs.append((name, doc))
        except yaml.YAMLError as e:
            fail(name, f"not strict YAML: {e}")
    return docs


def get(obj, *path, default=None):
    for p in path:
        if isinstance(obj, dict) and p in obj:
            obj = obj[p]
        elif isinstance(obj, list) and isinstance(p, int) and p < len(obj):
            obj = obj[p]
        else:
            return default
    return obj


def label_match(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_common(docs):
    for name, d in docs:
        where = f"{name} {d.get('kind')}/{get(d, 'metadata', 'name')}"
        for field in ("apiVersion", "kind"):
            if not d.get(field):
                fail(where, f"missing {field}")
        if not get(d, "metadata", "name"):
            fail(where, "missing metadata.name")
        if d.get("kind") != "Namespace" and not get(d, "metadata", "namespace"):
            fail(where, "missing metadata.namespace")


def check_pod(where, spec, objects, claim_templates=()):
    """Security and wiring of one pod spec (claim_templates: a StatefulSet's volumeClaimTemplates)."""
    if spec.get("automountServiceAccountToken") is not False:
        fail(where, "automountServiceAccountToken must be false")
    psc = spec.get("securityContext") or {}
    if psc.get("runAsNonRoot") is not True:
        fail(where, "pod securityContext.runAsNonRoot must be true")
    if psc.get("runAsUser") != UID or psc.get("runAsGroup") != UID:
        fail(where, f"pod must run as {UID}:{UID} (the images' permafrost user)")
    if get(psc, "seccompProfile", "type") != "RuntimeDefault":
        fail(where, "pod seccompProfile must be RuntimeDefault")
    if psc.get("fsGroup") == UID and psc.get("fsGroupChangePolicy") != "OnRootMismatch":
        fail(where, "fsGroupChangePolicy must be OnRootMismatch (a recursive chgrp would open the 0700 data dir)")
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    mountable = set(volumes) | set(claim_templates)
    for c in spec.get("containers") or []:
        cw = f"{where} container {c.get('name')}"
        if not c.get("image"):
            fail(cw, "missing image")
        sc = c.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            fail(cw, "allowPrivilegeEscalation must be false")
        if sc.get("readOnlyRootFilesystem") is not True:
            fail(cw, "readOnlyRootFilesystem must be true")
        if sc.get("privileged"):
            fail(cw, "must not be privileged")
        if "ALL" not in (get(sc, "capabilities", "drop") or []):
            fail(cw, "capabilities.drop must include ALL")
        if get(sc, "capabilities", "add"):
            fail(cw, "must add no capability")
        if not get(c, "resources", "limits", "memory"):
            fail(cw, "resources.limits.memory must be set")
        for m in c.get("volumeMounts") or []:
            if m["name"] not in mountable:
                fail(cw, f"volumeMount {m['name']} has no volume")
    claims = set()
    for v in volumes.values():
        refs = []
        if "configMap" in v:
            refs.append(("ConfigMap", v["configMap"]["name"]))
        if "secret" in v:
            refs.append(("Secret", v["secret"]["secretName"]))
        for src in get(v, "projected", "sources", default=[]) or []:
            if "configMap" in src:
                refs.append(("ConfigMap", src["configMap"]["name"]))
            if "secret" in src:
                refs.append(("Secret", src["secret"]["name"]))
        if "persistentVolumeClaim" in v:
            claims.add(v["persistentVolumeClaim"]["claimName"])
            refs.append(("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"]))
        for kind, ref in refs:
            if (kind, ref) not in objects:
                fail(where, f"volume {v['name']} needs {kind} {ref}, defined nowhere here")
    return volumes


def probe_is_health(probe):
    return (get(probe, "exec", "command") or [None])[0] == HEALTHCHECK


def node_configs(objects):
    cm = objects.get(("ConfigMap", "permafrost-config"))
    out = {}
    for key, text in (get(cm, "data") or {}).items():
        if key.endswith(".toml"):
            try:
                out[key[:-5]] = tomllib.loads(text)
            except tomllib.TOMLDecodeError as e:
                fail(f"ConfigMap permafrost-config {key}", f"not TOML: {e}")
    return out


def check_workloads(docs, objects):
    configs = node_configs(objects)
    cluster_files = set((get(objects.get(("ConfigMap", "permafrost-cluster")), "data") or {}).keys())
    services = {get(d, "metadata", "name"): d for _, d in docs if d.get("kind") == "Service"}
    signer_pods = []
    for name, d in docs:
        kind = d.get("kind")
        if kind not in ("StatefulSet", "Job"):
            continue
        where = f"{name} {kind}/{d['metadata']['name']}"
        tpl = get(d, "spec", "template") or {}
        spec = tpl.get("spec") or {}
        labels = get(tpl, "metadata", "labels") or {}
        templates = [get(v, "metadata", "name") for v in get(d, "spec", "volumeClaimTemplates") or []]
        check_pod(where, spec, objects, templates)
        if kind != "StatefulSet":
            continue
        selector = get(d, "spec", "selector", "matchLabels") or {}
        if not label_match(selector, labels):
            fail(where, "spec.selector.matchLabels does not select the pod template's labels")
        svc = services.get(get(d, "spec", "serviceName"))
        if svc is None:
            fail(where, f"serviceName {get(d, 'spec', 'serviceName')} is no Service here")
        elif not label_match(get(svc, "spec", "selector") or {}, labels):
            fail(where, "its Service does not select its pods")
        c = (spec.get("containers") or [{}])[0]
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if not probe_is_health(c.get(probe)):
                fail(where, f"{probe} must exec {HEALTHCHECK} (gRPC health over mTLS)")
        vct = {get(v, "metadata", "name"): v for v in get(d, "spec", "volumeClaimTemplates") or []}
        data = vct.get("data")
        if not data or not get(data, "spec", "resources", "requests", "storage"):
            fail(where, "needs a volumeClaimTemplate 'data' with a storage request")
        mounts = {m["name"]: m for m in c.get("volumeMounts") or []}
        if get(mounts, "data", "mountPath") != "/var/lib/permafrost":
            fail(where, "volume data must be mounted at /var/lib/permafrost")
        for m in mounts.values():
            if m["name"] != "data" and m["name"] != "tmp" and not m.get("readOnly"):
                fail(where, f"mount {m['name']} must be readOnly")
        if labels.get("app.kubernetes.io/component") != "signer":
            continue
        region = labels.get("permafrost.io/region")
        replicas = get(d, "spec", "replicas", default=1)
        secret_name = next((get(v, "secret", "secretName") for v in spec.get("volumes", [])
                            if v["name"] == "passphrases"), None)
        secret = objects.get(("Secret", secret_name)) or {}
        secret_keys = set((secret.get("stringData") or {}).keys()) | set((secret.get("data") or {}).keys())
        if not get(svc or {}, "spec", "publishNotReadyAddresses"):
            fail(where, "its headless Service must publishNotReadyAddresses (the coordinator judges health itself)")
        if get(svc or {}, "spec", "clusterIP") != "None":
            fail(where, "its Service must be headless (clusterIP: None)")
        for i in range(replicas):
            pod = f"{d['metadata']['name']}-{i}"
            signer_pods.append(pod)
            cfg = configs.get(pod)
            pw = f"{where} pod {pod}"
            if cfg is None:
                fail(pw, f"no {pod}.toml in ConfigMap permafrost-config")
                continue
            if cfg.get("id") != pod:
                fail(pw, f"config id {cfg.get('id')!r} is not the pod name")
            if cfg.get("region") != region:
                fail(pw, f"config region {cfg.get('region')!r} is not the StatefulSet's {region!r}")
            if cfg.get("data_dir", "").rstrip("/") in ("/var/lib/permafrost", ""):
                fail(pw, "data_dir must be a subdirectory of the volume (the volume root is group-owned)")
            pf = get(cfg, "sealer", "passphrase_file") or ""
            if pf != f"/run/secrets/permafrost/{pod}":
                fail(pw, f"sealer.passphrase_file {pf!r} is not its Secret key /run/secrets/permafrost/{pod}")
            if pod not in secret_keys:
                fail(pw, f"Secret {secret_name} has no key {pod}")
            cert = os.path.basename(get(cfg, "tls", "cert") or "")
            if cert not in cluster_files:
                fail(pw, f"certificate {cert} is not a key of ConfigMap permafrost-cluster")
    return signer_pods


def check_operators(objects):
    """Every daemon config holds one and the same operator registry."""
    cm = get(objects.get(("ConfigMap", "permafrost-config")), "data") or {}
    registries = {}
    for key, text in sorted(cm.items()):
        if not key.endswith(".toml"):
            continue
        where = f"ConfigMap permafrost-config {key}"
        try:
            reg = tomllib.loads(text).get("operators")
        except tomllib.TOMLDecodeError:
            continue  # reported by node_configs
        if reg is None:
            fail(where, "no [operators] section: the daemon would take part in no ceremony")
            continue
        keys = reg.get("keys") or {}
        extra = set(reg) - {"default_quorum", "keys", "quorum"}
        if extra:
            fail(where, f"[operators] has unknown fields {sorted(extra)}")
        if len(keys) < 2:
            fail(where, f"[operators.keys] lists {len(keys)} operator(s); at least 2")
        for op_id, value in keys.items():
            if not OPERATOR_ID.match(op_id):
                fail(where, f"operator id {op_id!r} is not 1..=64 of A-Z a-z 0-9 . _ -")
            if not (OPERATOR_PLACEHOLDER.match(value) or re.fullmatch(r"[0-9a-fA-F]{64}", value)):
                fail(where, f"operators.keys.{op_id} = {value!r} is neither a key nor a REPLACE_OPERATOR_*_PUBLIC_KEY placeholder")
        if len(set(keys.values())) != len(keys):
            fail(where, "two operators share a key (or a placeholder): one person, one seat")
        quorums = {"default_quorum": reg.get("default_quorum")}
        quorums.update({f"quorum.{op}": k for op, k in (reg.get("quorum") or {}).items()})
        for field, k in quorums.items():
            if not isinstance(k, int) or not 2 <= k <= len(keys):
                fail(where, f"operators.{field} = {k!r}: a quorum is 2..={len(keys)}")
        registries[key] = reg
    if len({repr(sorted((k, repr(v)) for k, v in r.items())) for r in registries.values()}) > 1:
        fail("ConfigMap permafrost-config", "the daemons' [operators] sections differ: every node must hold the same registry")
    return registries


def operator_stand_ins(text):
    """text with each operator placeholder replaced by a distinct valid key."""
    names = sorted(set(re.findall(r"REPLACE_OPERATOR_[A-Z0-9_]+_PUBLIC_KEY", text)))
    if len(names) > len(OPERATOR_TEST_KEYS):
        raise SystemExit(f"validate.py: more operator placeholders ({len(names)}) than stand-in keys")
    for name, key in zip(names, OPERATOR_TEST_KEYS):
        text = text.replace(name, key)
    return text


def check_pdb(docs, signer_pods):
    pdbs = [(n, d) for n, d in docs if d.get("kind") == "PodDisruptionBudget"]
    signer = [d for _, d in pdbs
              if label_match(get(d, "spec", "selector", "matchLabels") or {}, {"app.kubernetes.io/component": "signer"})]
    if not signer:
        fail("pdb", "no PodDisruptionBudget selects the signer pods")
        return
    for d in signer:
        where = f"PodDisruptionBudget/{d['metadata']['name']}"
        t = int(get(d, "metadata", "annotations", "permafrost.io/largest-threshold", default="0"))
        m = get(d, "spec", "minAvailable")
        if not isinstance(m, int):
            fail(where, "minAvailable must be a number of pods (the threshold), not a percentage")
        elif t <= 0 or m < t:
            fail(where, f"minAvailable {m} is below the largest threshold {t}")
        elif m > len(signer_pods):
            fail(where, f"minAvailable {m} is more than the {len(signer_pods)} signer pods: nothing could ever be drained")


def peers(rule, key):
    return rule.get(key) or []


def check_network_policies(docs):
    nps = [d for _, d in docs if d.get("kind") == "NetworkPolicy"]
    if not any(get(d, "spec", "podSelector") == {} and set(get(d, "spec", "policyTypes") or []) == {"Ingress", "Egress"}
               for d in nps):
        fail("networkpolicies", "no default-deny policy (podSelector {}, Ingress and Egress)")
    coordinator = {"app.kubernetes.io/component": "coordinator"}
    signer = {"app.kubernetes.io/component": "signer"}
    for d in nps:
        where = f"NetworkPolicy/{d['metadata']['name']}"
        sel = get(d, "spec", "podSelector", "matchLabels") or {}
        for rule in get(d, "spec", "ingress") or []:
            ports = [p.get("port") for p in rule.get("ports") or []]
            if ports != [PORT]:
                fail(where, f"ingress rule must be limited to port {PORT}, has {ports}")
            for peer in peers(rule, "from"):
                ns = get(peer, "namespaceSelector", "matchLabels", "kubernetes.io/metadata.name")
                pods = get(peer, "podSelector", "matchLabels")
                if "ipBlock" in peer:
                    fail(where, "ingress from an ipBlock")
                if sel == signer:
                    if not (pods == coordinator and "namespaceSelector" not in peer) and not (ns == OPERATORS_NS and pods is None):
                        fail(where, f"signers admit only the coordinator and {OPERATORS_NS}, not {peer}")
                if sel == coordinator and ns not in (OPERATORS_NS, CUSTODY_NS):
                    fail(where, f"the coordinator admits only {CUSTODY_NS} and {OPERATORS_NS}, not {peer}")
        if sel == signer and get(d, "spec", "egress"):
            fail(where, "signers must have no egress rule (a node dials nobody)")
    selected = {(tuple(sorted((get(d, "spec", "podSelector", "matchLabels") or {}).items())), t)
                for d in nps for t in get(d, "spec", "policyTypes") or []}
    for who in (signer, coordinator):
        for t in ("Ingress", "Egress"):
            if (tuple(sorted(who.items())), t) not in selected:
                fail("networkpolicies", f"no {t} policy for {who}")


def check_node_binary(node_bin, objects):
    cm = get(objects.get(("ConfigMap", "permafrost-config")), "data") or {}
    for key, text in sorted(cm.items()):
        if not key.endswith(".toml") or key == "coordinator.toml":
            continue
        with tempfile.TemporaryDirectory() as tmp:
            cfg = tomllib.loads(text)
            pf = os.path.join(tmp, "passphrase")
            with open(pf, "w") as f:
                f.write("throwaway-passphrase-for-config-check\n")
            text2 = (operator_stand_ins(text).replace("REPLACE_CUSTODY_PUBLIC_KEY", TEST_KEY)
                     .replace(f'"{cfg["data_dir"]}"', f'"{tmp}/data"')
                     .replace(f'"{cfg["sealer"]["passphrase_file"]}"', f'"{pf}"'))
            path = os.path.join(tmp, "node.toml")
            with open(path, "w") as f:
                f.write(text2)
            r = subprocess.run([node_bin, "init", "--config", path], capture_output=True, text=True)
            if r.returncode != 0 or "tls_csr" not in r.stdout:
                fail(f"ConfigMap permafrost-config {key}", f"permafrost-node refuses it: {r.stderr.strip()}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", nargs="?", default=HERE)
    ap.add_argument("--node-bin", help="permafrost-node to parse the node configs with")
    args = ap.parse_args()
    docs = load(args.dir)
    objects = {(d.get("kind"), get(d, "metadata", "name")): d for _, d in docs}
    check_common(docs)
    signer_pods = check_workloads(docs, objects)
    registries = check_operators(objects)
    check_pdb(docs, signer_pods)
    check_network_policies(docs)
    if args.node_bin:
        check_node_binary(args.node_bin, objects)
    kinds = sorted({d.get("kind") for _, d in docs})
    if errors:
        for e in errors:
            print(f"FAIL {e}")
        print(f"k8s: {len(errors)} problem(s) in {len(docs)} objects")
        return 1
    print(f"k8s: {len(docs)} objects ({', '.join(kinds)}); {len(signer_pods)} signer pods "
          f"({', '.join(signer_pods)}) each with its config, Secret key and certificate; "
          f"the same operator registry in all {len(registries)} daemon configs; all checks pass"
          + ("; node configs accepted by permafrost-node" if args.node_bin else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
