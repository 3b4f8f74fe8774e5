"""The node loop: raftcore driven by storage, transport and client requests."""

from kvstore.node.config import NodeConfig, cluster_id_of, parse_initial_cluster
from kvstore.node.node import Node
from kvstore.node.waiters import LeadershipLost, NotLeaderError, WriteTimeout

__all__ = [
    "LeadershipLost",
    "Node",
    "NodeConfig",
    "NotLeaderError",
    "WriteTimeout",
    "cluster_id_of",
    "parse_initial_cluster",
]
