"""A StatefulSet of ``kvstore serve`` pods, played by processes on 127.0.0.1.

Each process gets the environment Kubernetes gives the container of
``deploy/kubernetes/base/statefulset.yaml`` (its ``env`` with the downward
API filled in and ``$(VAR)`` references expanded, and ``HOSTNAME``), so it
runs in Kubernetes mode exactly as a pod does. Only what cannot be the same
on one machine is overridden:

* the listen addresses (``KVSTORE_CLIENT_ADDR``, ``KVSTORE_LISTEN_PEER_ADDR``,
  ``KVSTORE_METRICS_ADDR``): a free 127.0.0.1 port each, not 0.0.0.0:7101...;
* ``KVSTORE_PEER_ROUTES``: every pod's DNS name at the peer port is dialled
  at that pod's 127.0.0.1 port (what the cluster DNS would resolve);
* ``KVSTORE_JOIN``: the other pods' client endpoints, in the order Kubernetes
  mode derives them from the ordinals, at their 127.0.0.1 ports;
* ``KVSTORE_DATA_DIR``: a directory per pod (the pod's volume) under the test's.

Ports are chosen for ``pods`` pods up front, so that the routes name the pods
a scale-up adds later. Processes are those of :class:`Cluster`: signalled by
PID only, and stopped by ``running_cluster`` whatever happens.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.tools import KUSTOMIZE, container
from tests.integration.cluster import Cluster, Member

MANIFEST = KUSTOMIZE / "base" / "statefulset.yaml"
NAMESPACE = "kvtest"
PEER_PORT = 7201  # the container port named "peer"; the port in every peer address


def load_statefulset() -> dict[str, Any]:
    manifest: dict[str, Any] = yaml.safe_load(MANIFEST.read_text())
    return manifest


def pod_environment(statefulset: dict[str, Any], pod: str, namespace: str) -> dict[str, str]:
    """The container's environment in pod ``pod``, as the kubelet builds it."""
    fields = {"metadata.name": pod, "metadata.namespace": namespace}
    env = {"HOSTNAME": pod}
    for entry in container(statefulset)["env"]:
        if "valueFrom" in entry:
            env[entry["name"]] = fields[entry["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            env[entry["name"]] = re.sub(
                r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), str(entry["value"])
            )
    return env


class StatefulSetCluster(Cluster):
    """``size`` pods of the base StatefulSet (its replicas), room for ``pods`` in all.

    Member ``i`` is the pod with ordinal ``i - 1``; its ``peer_addr`` is the
    127.0.0.1 address it listens on, not the DNS name it is known by.
    """

    def __init__(
        self, base_dir: Path, size: int = 3, extra_args: Sequence[str] = (), pods: int = 4
    ) -> None:
        self.statefulset = load_statefulset()
        if size != self.statefulset["spec"]["replicas"]:
            raise ValueError(f"the manifest has {self.statefulset['spec']['replicas']} replicas")
        super().__init__(base_dir, pods, extra_args)
        self.replicas = size
        # Pods beyond the replicas exist once the StatefulSet is scaled up.
        self.unscheduled: dict[int, Member] = {
            i: self.members.pop(i) for i in range(size + 1, pods + 1)
        }

    @property
    def name(self) -> str:
        return str(self.statefulset["metadata"]["name"])

    def pod(self, member_id: int) -> str:
        return f"{self.name}-{member_id - 1}"

    def dns_name(self, member_id: int) -> str:
        service = self.statefulset["spec"]["serviceName"]
        return f"{self.pod(member_id)}.{service}.{NAMESPACE}.svc.cluster.local"

    def peer_address(self, member_id: int) -> str:
        """The address the other members know this pod by."""
        return f"{self.dns_name(member_id)}:{PEER_PORT}"

    def all_pods(self) -> dict[int, Member]:
        return {**self.members, **self.unscheduled}

    def scale_up(self) -> int:
        """Add the next pod (not started); its member id."""
        member_id = min(self.unscheduled)
        self.members[member_id] = self.unscheduled.pop(member_id)
        return member_id

    def command(self, member: Member) -> list[str]:
        return [sys.executable, "-m", "kvstore", "serve", *self.extra_args]

    def child_env(self, member: Member) -> dict[str, str]:
        env = super().child_env(member)
        env.update(pod_environment(self.statefulset, self.pod(member.id), NAMESPACE))
        pods = self.all_pods()
        ordinal = member.id - 1
        siblings = [i + 1 for i in range(max(self.replicas, ordinal)) if i != ordinal]
        env.update(
            KVSTORE_DATA_DIR=str(member.data_dir),
            KVSTORE_CLIENT_ADDR=member.client_addr,
            KVSTORE_LISTEN_PEER_ADDR=member.peer_addr,
            KVSTORE_METRICS_ADDR=member.metrics_addr,
            KVSTORE_PEER_ROUTES=",".join(
                f"{self.peer_address(i)}={m.peer_addr}" for i, m in pods.items()
            ),
            KVSTORE_JOIN=",".join(pods[i].client_addr for i in siblings),
        )
        return env
