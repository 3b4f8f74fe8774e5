"""Kubernetes mode of ``kvstore serve`` (``--k8s``, env ``KVSTORE_K8S=true``).

A StatefulSet ``kvstore`` whose headless Service is ``kvstore-peer`` runs the
pods ``kvstore-0``, ``kvstore-1``, ...; each one is reachable at its stable
name ``kvstore-N.kvstore-peer.NAMESPACE.svc.DOMAIN`` for as long as the pod
exists, whatever its IP. Everything a member needs is derived from that:

* **member id = ordinal + 1**: member ids are positive (0 means "none" in
  Raft and in every response header), so pod ``kvstore-0`` is member 1 and
  ``kvstore-3`` is member 4. ``kvctl member list`` shows both the id and the
  pod name (in the peer address);
* **peer address** (what the others know this member by): the pod's stable
  name at the peer port (the port of ``--peer-addr`` if given, else 7201);
* **listen address**: ``0.0.0.0`` at that port (``--listen-peer-addr``
  overrides), since the pod's IP changes when it is rescheduled and its own
  name may not resolve yet while it starts;
* **initial cluster**: the first ``--replicas`` pods, ``{i + 1: name(i)}``.
  ``--replicas`` is the size of the cluster *at bootstrap*; it stays the
  same when the StatefulSet is scaled;
* **endpoints of the running cluster**: the client ports of the other pods
  (``--join`` overrides), to join through or to ask about the cluster.

How a pod starts:

* its volume holds a cluster already (a ``cluster_id`` beside the data): it
  resumes from it (a restarted or rescheduled pod);
* its ordinal is ``--replicas`` or more, with an empty volume: a scale-up. It
  joins through MemberAdd (kvstore.join): stand-by, caught up, promoted;
* its ordinal is below ``--replicas``, with an empty volume: one of the
  initial members. It asks the other pods first (:func:`settle`): when a
  running member answers with a configuration that does not hold this
  member, the member was removed (its volume lost, see deploy/README.md)
  and it joins as a new member through MemberAdd. Otherwise it bootstraps
  the initial cluster, as every initial member does, with the same member
  list and so the same cluster id (one cluster, never two).

A member that comes back on an *empty* volume while the configuration still
holds it cannot be told apart from an initial member that starts late: it
bootstraps, and has forgotten its votes and its log. Remove such a member
before its pod restarts (deploy/README.md, "A member lost its volume"); this
module logs a warning when a running cluster already lists it.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from kvstore.join import JoinError, fetch_member_list
from kvstore.node import NodeConfig

__all__ = [
    "DEFAULT_DOMAIN",
    "DEFAULT_PEER_PORT",
    "NAMESPACE_FILE",
    "KubernetesError",
    "Plan",
    "Pod",
    "parse_pod_name",
    "plan",
    "pod_from_env",
    "settle",
]

log = logging.getLogger("kvstore.k8s")

DEFAULT_DOMAIN = "cluster.local"
DEFAULT_PEER_PORT = 7201
#: Where Kubernetes puts the pod's namespace when a service-account token is mounted.
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
#: How long an initial member with an empty volume asks the other pods whether
#: a cluster runs without it, before it bootstraps. The pods of a new cluster
#: start together and answer nothing (or a configuration that holds them).
PROBE_TIMEOUT = 3.0

# A StatefulSet pod name: the StatefulSet's name (a DNS label), "-", the ordinal.
_POD_NAME = re.compile(r"^(?P<name>[a-z0-9]([-a-z0-9]*[a-z0-9])?)-(?P<ordinal>0|[1-9][0-9]*)$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class KubernetesError(ValueError):
    """The pod's environment does not describe a StatefulSet pod; the message says what."""


@dataclass(frozen=True)
class Pod:
    """One pod of the StatefulSet, and the stable names of its siblings."""

    statefulset: str
    ordinal: int
    service: str  # the headless Service (the StatefulSet's serviceName)
    namespace: str
    domain: str = DEFAULT_DOMAIN

    @property
    def name(self) -> str:
        return f"{self.statefulset}-{self.ordinal}"

    @property
    def member_id(self) -> int:
        return member_id_of(self.ordinal)

    def host(self, ordinal: int) -> str:
        """The stable DNS name of the pod with that ordinal."""
        return f"{self.statefulset}-{ordinal}.{self.service}.{self.namespace}.svc.{self.domain}"


@dataclass(frozen=True)
class Plan:
    """What Kubernetes mode sets in the member's configuration (kvstore.node.NodeConfig)."""

    pod: Pod
    replicas: int
    peer_addr: str
    listen_peer_addr: str
    #: The bootstrap members; empty for a pod that joins.
    initial_cluster: dict[int, str] = field(default_factory=dict)
    #: Client endpoints to join through; empty for an initial member.
    join: list[str] = field(default_factory=list)
    #: The other pods' client endpoints (or --join): where the running cluster answers.
    endpoints: list[str] = field(default_factory=list)

    @property
    def member_id(self) -> int:
        return self.pod.member_id


def member_id_of(ordinal: int) -> int:
    """Pod ordinal -> member id: ordinal + 1, as ids are positive."""
    return ordinal + 1


def parse_pod_name(name: str) -> tuple[str, int]:
    """``kvstore-2`` -> ("kvstore", 2); an error names a name that is not NAME-ORDINAL."""
    match = _POD_NAME.match(name)
    if match is None:
        raise KubernetesError(
            f"pod name {name!r} is not a StatefulSet pod name NAME-ORDINAL (such as kvstore-0): "
            "Kubernetes mode takes the member id from the ordinal (set POD_NAME from the "
            "downward API, metadata.name)"
        )
    return match["name"], int(match["ordinal"])


def pod_name_of(env: Mapping[str, str]) -> str:
    """POD_NAME (downward API), else HOSTNAME, else the host name: a pod's host name
    is its name."""
    name = env.get("POD_NAME") or env.get("HOSTNAME") or socket.gethostname()
    return name.split(".", 1)[0]


def namespace_of(env: Mapping[str, str], namespace_file: Path = NAMESPACE_FILE) -> str:
    """POD_NAMESPACE (downward API), else the service account's namespace file."""
    namespace = env.get("POD_NAMESPACE", "").strip()
    if not namespace:
        try:
            namespace = namespace_file.read_text().strip()
        except OSError:
            namespace = ""
    if not namespace:
        raise KubernetesError(
            "Kubernetes mode needs the pod's namespace: set POD_NAMESPACE from the downward "
            f"API (fieldRef metadata.namespace); {namespace_file} is not there either"
        )
    if not _DNS_LABEL.match(namespace):
        raise KubernetesError(f"namespace {namespace!r} is not a DNS label")
    return namespace


def pod_from_env(
    env: Mapping[str, str],
    service: str,
    domain: str = DEFAULT_DOMAIN,
    namespace_file: Path = NAMESPACE_FILE,
) -> Pod:
    if not service:
        raise KubernetesError(
            "Kubernetes mode needs --peer-service (KVSTORE_PEER_SERVICE): the StatefulSet's "
            "headless Service, whose DNS names the members reach each other by"
        )
    if not _DNS_LABEL.match(service):
        raise KubernetesError(f"--peer-service {service!r} is not a DNS label")
    domain = domain.strip().strip(".")
    if not domain:
        raise KubernetesError("--cluster-domain is empty (the default is cluster.local)")
    statefulset, ordinal = parse_pod_name(pod_name_of(env))
    return Pod(statefulset, ordinal, service, namespace_of(env, namespace_file), domain)


def _port(address: str, flag: str) -> int:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise KubernetesError(f"{flag} {address!r} is not HOST:PORT")
    return int(port)


def plan(
    pod: Pod,
    replicas: int | None,
    *,
    client_addr: str,
    peer_addr: str | None = None,
    listen_peer_addr: str | None = None,
    join: Sequence[str] = (),
    member_id: int | None = None,
    initial_cluster: str = "",
) -> Plan:
    """The member's identity, addresses and peers, from the pod and the flags given.

    ``peer_addr``, if given, must be the pod's stable name (its port is then
    every member's peer port); ``listen_peer_addr`` and ``join`` override the
    derived ones (tests on one machine map the names to 127.0.0.1 ports).
    """
    if replicas is None or replicas < 1:
        raise KubernetesError(
            "Kubernetes mode needs --replicas (KVSTORE_REPLICAS) of at least 1: the number of "
            f"members of the initial cluster (the StatefulSet's replicas at bootstrap), got {replicas}"
        )
    if member_id is not None and member_id != pod.member_id:
        raise KubernetesError(
            f"--id {member_id} contradicts the pod name {pod.name}: in Kubernetes mode the "
            f"member id is the ordinal + 1 ({pod.member_id}); leave --id unset"
        )
    if initial_cluster:
        raise KubernetesError(
            "--initial-cluster is derived in Kubernetes mode (from --replicas and the pod "
            "names); leave it unset"
        )
    own_host = pod.host(pod.ordinal)
    peer_port = DEFAULT_PEER_PORT
    if peer_addr:
        peer_port = _port(peer_addr, "--peer-addr")
        if peer_addr.rpartition(":")[0] != own_host:
            raise KubernetesError(
                f"--peer-addr {peer_addr} is not this pod's stable name {own_host}:PORT: in "
                "Kubernetes mode the peer address is derived (leave it unset, or check "
                "--peer-service, the namespace and --cluster-domain); the address to listen "
                "on is --listen-peer-addr"
            )
    client_port = _port(client_addr, "--client-addr")
    siblings = [i for i in range(max(replicas, pod.ordinal)) if i != pod.ordinal]
    endpoints = list(join) or [f"{pod.host(i)}:{client_port}" for i in siblings]
    joins = pod.ordinal >= replicas
    if joins and not endpoints:
        raise KubernetesError(f"pod {pod.name} has no other pod to join through")
    return Plan(
        pod=pod,
        replicas=replicas,
        peer_addr=f"{own_host}:{peer_port}",
        listen_peer_addr=listen_peer_addr or f"0.0.0.0:{peer_port}",
        initial_cluster=(
            {}
            if joins
            else {member_id_of(i): f"{pod.host(i)}:{peer_port}" for i in range(replicas)}
        ),
        join=endpoints if joins else [],
        endpoints=endpoints,
    )


async def settle(
    config: NodeConfig,
    k8s: Plan,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    timeout: float = PROBE_TIMEOUT,
) -> NodeConfig:
    """An initial member on an empty volume: bootstrap, or join a cluster that removed it.

    Joining is always safe (a joining member never campaigns before the
    cluster adds it); bootstrapping is what every initial member does. Only a
    member that answers with a configuration holding itself counts: a pod
    that is still joining, or was removed, knows no current configuration.
    """
    if config.join or not config.initial_cluster or not k8s.endpoints:
        return config
    if (config.data_dir / "cluster_id").exists():
        return config
    try:
        answer = await fetch_member_list(k8s.endpoints, timeout, credentials=credentials)
    except JoinError as exc:
        log.info("no running cluster answered (%s): bootstrapping the initial cluster", exc)
        return config
    ids = {m.id for m in answer.members}
    if answer.header.member_id not in ids:
        return config
    if config.id not in ids:
        log.warning(
            "member %d (pod %s) is not in the running cluster's configuration (members %s): "
            "it was removed, so it joins as a new member",
            config.id,
            k8s.pod.name,
            sorted(ids),
        )
        return dataclasses.replace(config, initial_cluster={}, join=k8s.endpoints)
    if answer.header.leader_id:
        log.warning(
            "member %d (pod %s) starts on an empty data directory, but the running cluster "
            "(leader %d) already lists it. Fine if the cluster is new and this pod started "
            "late; if this pod lost its volume, remove the member (kvctl member remove %d) "
            "and delete the pod: it then rejoins as a new member (deploy/README.md)",
            config.id,
            k8s.pod.name,
            answer.header.leader_id,
            config.id,
        )
    return config
