"""The client-facing gRPC server: ``kvstore.v1.KV``, ``kvstore.v1.Cluster``,
standard health checking and server reflection."""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from kvstore.api.executor import Executor, RequestError
from kvstore.backup import serve_snapshot
from kvstore.v1 import kv_pb2, kv_pb2_grpc

log = logging.getLogger("kvstore.api")

# Above the largest value (1 MiB by default) so that the size error is ours.
MAX_MESSAGE_BYTES = 64 << 20
VERSION = "0.1.0"
#: Bound on a membership call whose client set no deadline. A catch-up copies
#: the whole log or a snapshot, far more than --request-timeout allows for.
ADMIN_TIMEOUT = 60.0


async def run_request(
    executor: Executor,
    method: str,
    request: Any,
    context: grpc.aio.ServicerContext,
    timeout: float,
) -> Any:
    """Run one call within ``timeout`` and the client's deadline; count it in the metrics."""
    remaining = context.time_remaining()
    if remaining is not None:
        # Answer before the client gives up, so it learns what happened.
        margin = max(0.05, remaining * 0.05)
        timeout = min(timeout, max(remaining - margin, 0.001))
    metrics = executor.node.metrics
    started = time.perf_counter()
    code = "OK"
    try:
        return await executor.execute(method, request, timeout)
    except RequestError as exc:
        code = exc.code.name
        await context.abort(exc.code, exc.message)
    finally:
        metrics.observe_request(method, code, time.perf_counter() - started)


class KVService(kv_pb2_grpc.KVServicer):
    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.timeout = executor.node.config.request_timeout

    # Each calls run_request itself: one coroutine frame less per request.
    async def Put(self, request: Any, context: Any) -> Any:
        return await run_request(self.executor, "Put", request, context, self.timeout)

    async def Get(self, request: Any, context: Any) -> Any:
        return await run_request(self.executor, "Get", request, context, self.timeout)

    async def Delete(self, request: Any, context: Any) -> Any:
        return await run_request(self.executor, "Delete", request, context, self.timeout)

    async def Range(self, request: Any, context: Any) -> Any:
        return await run_request(self.executor, "Range", request, context, self.timeout)

    async def CompareAndSwap(self, request: Any, context: Any) -> Any:
        return await run_request(self.executor, "CompareAndSwap", request, context, self.timeout)


class ClusterService(kv_pb2_grpc.ClusterServicer):
    def __init__(self, executor: Executor) -> None:
        self.executor = executor

    async def Status(self, request: Any, context: Any) -> Any:
        node = self.executor.node
        response = kv_pb2.StatusResponse(
            commit_index=node.raft.commit_index,
            applied_index=node.applied_index,
            last_index=node.raft.last_index,
            state=node.raft.state.name,
            db_size_bytes=node.storage.db_size_bytes(),
            version=VERSION,
        )
        return self.executor._fill_header(response)

    async def MemberList(self, request: Any, context: Any) -> Any:
        """Linearizable (the default): the leader's configuration, which includes
        every change acknowledged before the call; serializable: this member's."""
        timeout = self.executor.node.config.request_timeout
        return await run_request(self.executor, "MemberList", request, context, timeout)

    async def _admin(self, method: str, request: Any, context: Any) -> Any:
        # The client's deadline (if any) bounds a membership call, not
        # --request-timeout: catching a member up may take long.
        remaining = context.time_remaining()
        timeout = ADMIN_TIMEOUT if remaining is None else remaining
        return await run_request(self.executor, method, request, context, timeout)

    async def MemberAdd(self, request: Any, context: Any) -> Any:
        return await self._admin("MemberAdd", request, context)

    async def MemberRemove(self, request: Any, context: Any) -> Any:
        return await self._admin("MemberRemove", request, context)

    async def MemberPromote(self, request: Any, context: Any) -> Any:
        return await self._admin("MemberPromote", request, context)

    async def MemberDemote(self, request: Any, context: Any) -> Any:
        return await self._admin("MemberDemote", request, context)

    async def TransferLeader(self, request: Any, context: Any) -> Any:
        return await self._admin("TransferLeader", request, context)

    async def Snapshot(self, request: Any, context: Any) -> None:
        """A consistent backup of this member's data, streamed (kvstore.backup)."""
        await serve_snapshot(self.executor, context)


#: What reflection lists; health reports KV and Cluster (the first two) by name.
CLIENT_SERVICES = (
    kv_pb2.DESCRIPTOR.services_by_name["KV"].full_name,
    kv_pb2.DESCRIPTOR.services_by_name["Cluster"].full_name,
    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
    reflection.SERVICE_NAME,
)


class _GenericHandlersOnly:
    """Stands for the server in the generated ``add_*_to_server`` functions and
    passes on only their generic handlers. grpc.aio's server loop keeps a
    pending request per registered method and waits on all of them for every
    call that arrives; our 16 methods made a call cost ~10% more server CPU
    than on a bare echo server (tests/unit/test_client_services.py)."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: Any) -> None:
        """The generic handler added with them serves these methods."""


def add_client_services(server: grpc.aio.Server, executor: Executor, health_servicer: Any) -> None:
    """KV, Cluster, health checking (``health_servicer``, shared by the client
    port's servers) and reflection on ``server``, through generic handlers only."""
    target: Any = _GenericHandlersOnly(server)
    kv_pb2_grpc.add_KVServicer_to_server(KVService(executor), target)
    kv_pb2_grpc.add_ClusterServicer_to_server(ClusterService(executor), target)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, target)
    reflection.enable_server_reflection(CLIENT_SERVICES, target)
