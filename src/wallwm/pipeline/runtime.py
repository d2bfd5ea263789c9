"""Starting (or joining) Ray, quietly. One local Ray per process; ``address`` joins a cluster."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Initialise Ray once: embedded local Ray by default, a real cluster with ``address``."""
    import ray

    # Lance warns at import that it is not fork-safe; Ray workers are spawned processes that
    # open their own datasets, so the warning is noise here.
    warnings.filterwarnings("ignore", message="lance is not fork-safe")
    if ray.is_initialized():
        return
    # Ray >= 2.5x enables token auth for local clusters and warns about it; an embedded,
    # loopback-only Ray started for one job does not need it.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    # Ray's C++ core logs a scary-looking but harmless line for every Ray Data actor pool
    # ("constructor arguments in the object store"); Python-level errors still raise. Set
    # RAY_BACKEND_LOG_LEVEL yourself to see Ray's internal logs.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    kwargs: dict[str, object] = {
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "log_to_driver": False,
        "configure_logging": True,
    }
    if address:
        check_ray_address(address)
    with without_start_banner():
        if address:
            ray.init(address=address, **kwargs)  # type: ignore[arg-type]
        else:
            _start_local(num_cpus or os.cpu_count() or 1, kwargs)
    quiet_ray_data()


#: What Ray's C++ core prints on the driver's stderr at start whenever RAY_BACKEND_LOG_LEVEL is
#: set -- an INFO line, whatever the level it announces (Ray 2.60: "logging.cc:303: Set ray log
#: level from environment variable RAY_BACKEND_LOG_LEVEL to 3").
START_BANNER = "Set ray log level from environment variable"


@contextlib.contextmanager
def without_start_banner() -> Iterator[None]:
    """Pass on everything written to stderr inside the block but Ray's start banner.

    The process's stderr (file descriptor 2, which Ray's C++ core writes to) goes to a file
    while Ray starts, and is written back afterwards without the :data:`START_BANNER` line:
    every command that starts Ray printed it first, before its own output.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if START_BANNER not in line))
            sys.stderr.flush()


#: Seconds to wait for a cluster's head to accept a connection before saying none answers.
CONNECT_TIMEOUT_S = 10.0


def check_ray_address(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse an address where no Ray head listens, at once and in one line.

    ``ray.init`` waits minutes for an unreachable head (its GCS client retries), printing
    reconnect warnings. ``HOST:PORT`` (the head's GCS) and ``ray://HOST:PORT`` (Ray Client)
    are tried with a plain TCP connect; ``auto`` and ``local`` are Ray's to resolve.

    Raises:
        ValueError: The address is malformed, or nothing accepts connections there.
    """
    import socket

    if address in ("auto", "local"):
        return
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"--ray-address {address}: expected HOST:PORT (or ray://HOST:PORT, auto)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ValueError(
            f"--ray-address {address}: no Ray cluster answers there ({exc}); start one with "
            "`ray start --head`, or leave the option out for a local Ray"
        ) from exc


#: Attempts at starting the embedded Ray (see ``_start_local``).
LOCAL_START_ATTEMPTS = 3


def _start_local(num_cpus: int, kwargs: dict[str, object]) -> None:
    """Start the embedded Ray, retrying a start that timed out.

    On a CPU-starved machine Ray's raylet can exit at start-up because its agents did not write
    their port files within a fixed 15 s (ray-project/ray#65983: "Timed out waiting for file
    .../metrics_agent_port_..."); ``ray.init`` then fails with "The current node timed out during
    startup". A second start on the same machine normally succeeds.
    """
    import ray

    for attempt in range(1, LOCAL_START_ATTEMPTS + 1):
        try:
            ray.init(num_cpus=num_cpus, **kwargs)  # type: ignore[arg-type]
            return
        except Exception as exc:
            ray.shutdown()
            if attempt == LOCAL_START_ATTEMPTS:
                raise RuntimeError(
                    f"the embedded Ray did not start in {attempt} attempts ({exc}); is the "
                    "machine out of CPU or memory? Logs: /tmp/ray/session_latest/logs"
                ) from exc
            logging.getLogger(__name__).warning(
                "embedded Ray failed to start (%s); retrying (%d/%d)",
                exc,
                attempt + 1,
                LOCAL_START_ATTEMPTS,
            )


def quiet_ray_data() -> None:
    """Silence Ray Data's own progress bars and plan logs (we draw our own with rich)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.verbose_stats_logs = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    logging.getLogger("ray").setLevel(logging.ERROR)
