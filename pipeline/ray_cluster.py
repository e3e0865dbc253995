"""Ray cluster plumbing: join ``RAY_ADDRESS`` (a bounded wait, then one line) or start a private local
instance that listens on 127.0.0.1 only, and the housekeeping Ray Train's stopped trials need.
Ray Train itself lives in :mod:`pipeline.distributed`, Ray Tune in :mod:`pipeline.sweep`."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

from pipeline.errors import UserError, seconds_from_env, wait_until_reachable

RAY_CONNECT_TIMEOUT_S = 30


def wait_for_cluster(address: str, timeout_s: float | None = None) -> None:
    """Wait until the GCS port of ``address`` (``host:port``) accepts a connection, at most
    ``timeout_s`` seconds (default ``PIPELINE_RAY_CONNECT_TIMEOUT_S`` or 30); raise a one-line error after.

    ``ray.init`` itself retries an unreachable address for minutes; this bounds the wait.
    ``auto`` and ``ray://`` client addresses are left to Ray.
    """
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"RAY_ADDRESS={address} is not host:port (e.g. 127.0.0.1:6379)")
    timeout_s = seconds_from_env(timeout_s, "PIPELINE_RAY_CONNECT_TIMEOUT_S", RAY_CONNECT_TIMEOUT_S)

    def connect(seconds: float) -> None:
        socket.create_connection((host, int(port)), timeout=seconds).close()

    wait_until_reachable(connect, timeout_s, f"the Ray cluster at RAY_ADDRESS={address}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_ray(num_cpus: int | None = None) -> None:
    """Connect to ``RAY_ADDRESS`` when set (bounded wait), else start a private local instance that
    listens on 127.0.0.1 only (GCS, raylet, workers, dashboard and its agent)."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        wait_for_cluster(address)
        # a loopback address is a local instance of this machine (a pipeline run's, see
        # stages/with_ray.py): join it as a node of 127.0.0.1, the address it was started with
        joining = _loopback_node() if address.split(":")[0] in ("127.0.0.1", "localhost") else contextlib.nullcontext()
        api = os.environ.get("RAY_API_SERVER_ADDRESS")  # see _init_local; set by stages/with_ray.py for its children
        try:
            with joining:
                ray.init(
                    address=address,
                    log_to_driver=True,
                    runtime_env={"env_vars": {"RAY_API_SERVER_ADDRESS": api}} if api else None,
                )
        except (ConnectionError, TimeoutError, RuntimeError) as exc:
            raise UserError(
                f"cannot reach the Ray cluster at RAY_ADDRESS={address}: {str(exc).splitlines()[0]}"
            ) from None
        return
    dashboard_port = free_port()
    with _loopback_node():
        _init_local(num_cpus, dashboard_port)


@contextlib.contextmanager
def _loopback_node() -> Iterator[None]:
    """While a local instance starts, its node address is 127.0.0.1, so that the GCS, the raylet,
    the workers and the dashboard agent listen on loopback only.

    Ray resolves a local node to the machine's reachable address (and then binds its servers to
    every interface) unless multi-node clusters are off, as it does on macOS and Windows; the
    flag is read at call time, and the started processes get the address from the driver."""
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def _init_local(num_cpus: int | None, dashboard_port: int) -> None:
    import ray

    ray.init(
        address="local",
        num_cpus=num_cpus or max(os.cpu_count() or 1, 2),
        dashboard_host="127.0.0.1",
        dashboard_port=dashboard_port,
        include_dashboard=True,  # Train V2 placement-group cleanup and `ray job` need it
        # Train's placement-group cleaner asks the state API for its controller, which otherwise
        # resolves "auto" and fails when another Ray instance runs on the machine; the
        # placement groups of stopped trials then leak until later trials wait forever.
        runtime_env={"env_vars": {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{dashboard_port}"}},
        log_to_driver=True,
        configure_logging=False,
    )


def release_orphaned_placement_groups() -> int:
    """Remove this job's placement groups whose creating actor is dead; returns how many.

    Ray Train's controller creates its worker group's placement group, and a placement group
    lives as long as the job that made it. When Tune stops a trial, the trial's controller dies
    with it, and it can die after it has stopped its ``PlacementGroupCleaner`` but before it has
    removed the group: the group then holds its CPUs until the sweep ends, and a later trial's
    workers wait for them forever (seen in a sweep on 2 CPUs: 1.5 reserved, a 1-CPU worker group
    pending, its controller dead). Groups made by the driver itself (Tune's trials) have no
    creating actor and are left alone, as are other jobs' groups."""
    import ray
    from ray._private import state
    from ray.core.generated import gcs_pb2
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    job = ray.get_runtime_context().get_job_id()
    held = (gcs_pb2.PlacementGroupTableData.CREATED, gcs_pb2.PlacementGroupTableData.PENDING)
    released = 0
    # GCS's own tables (a private accessor; ray is pinned): the state API resolves "auto", which fails beside another Ray instance
    for raw in state.state._connect_and_get_accessor().get_placement_group_table():
        pg = gcs_pb2.PlacementGroupTableData.FromString(raw)
        creator = ray.ActorID(pg.creator_actor_id)
        if pg.state not in held or pg.is_detached or creator.is_nil() or ray.JobID(pg.creator_job_id).hex() != job:
            continue
        if state.actors(creator.hex()).get("State") == "DEAD":
            remove_placement_group(PlacementGroup(ray.PlacementGroupID(pg.placement_group_id)))
            released += 1
    return released
