"""Kubernetes NetworkPolicy ingress semantics, evaluated offline for the tests in tests/deploy:
which pods a policy selects, and whether a connection from one pod to another on a port is
admitted by a set of policies (networking.k8s.io/v1; matchLabels selectors and numeric TCP
ports only, which is all deploy/kuberay uses; anything else is refused as unsupported)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set by Kubernetes on every namespace


@dataclass(frozen=True)
class Pod:
    """A pod as a NetworkPolicy sees it: its namespace and labels."""

    namespace: str
    labels: dict[str, str] = field(default_factory=dict)


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector of matchLabels only ({} selects everything)."""
    unsupported = set(selector) - {"matchLabels"}
    assert not unsupported, f"selector fields not evaluated here: {unsupported}"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def selects(policy: dict[str, Any], pod: Pod) -> bool:
    """Whether the policy applies to the pod's ingress."""
    return (
        policy["metadata"]["namespace"] == pod.namespace
        and "Ingress" in policy["spec"].get("policyTypes", ["Ingress"])
        and matches(policy["spec"]["podSelector"], pod.labels)
    )


def peer_matches(peer: dict[str, Any], policy_namespace: str, source: Pod) -> bool:
    """One `from` entry: podSelector alone means the policy's namespace; namespaceSelector
    alone, every pod of the selected namespaces; both, the selected pods of those namespaces."""
    assert set(peer) <= {"podSelector", "namespaceSelector"}, f"peer not evaluated here: {peer}"
    if "namespaceSelector" in peer:
        namespace_labels = {NAMESPACE_NAME_LABEL: source.namespace}
        if not matches(peer["namespaceSelector"], namespace_labels):
            return False
    elif source.namespace != policy_namespace:
        return False
    return matches(peer.get("podSelector", {}), source.labels)


def port_matches(rule: dict[str, Any], port: int) -> bool:
    if "ports" not in rule:
        return True
    for entry in rule["ports"]:
        assert entry.get("protocol", "TCP") == "TCP" and isinstance(entry["port"], int), entry
        assert "endPort" not in entry, entry
    return any(entry["port"] == port for entry in rule["ports"])


def admitted(policies: list[dict[str, Any]], source: Pod, target: Pod, port: int) -> bool:
    """Whether a TCP connection from source to target:port is allowed. A pod no policy selects
    admits everything; a selected pod admits what any rule of any selecting policy allows."""
    selecting = [p for p in policies if selects(p, target)]
    if not selecting:
        return True
    for policy in selecting:
        namespace = policy["metadata"]["namespace"]
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from")
            from_source = not peers or any(peer_matches(p, namespace, source) for p in peers)
            if from_source and port_matches(rule, port):
                return True
    return False
