"""The check that keeps the Dask client out of gevent-patched processes."""

from __future__ import annotations

from gevent import monkey

from ._errors import GeventPatchedError

__all__ = ["check_unpatched"]

# The modules whose patching breaks the Dask client: it runs its own event
# loop in a real thread and blocks on real sockets and locks.
_MODULES = ("socket", "select", "selectors", "thread", "threading", "time", "ssl", "queue")


def check_unpatched() -> None:
    """Raise if ``gevent.monkey`` patched a module the Dask client relies on.

    Never blocks and imports nothing from Dask.

    Raises:
        GeventPatchedError: One of those modules is patched.
    """
    patched = tuple(name for name in _MODULES if monkey.is_module_patched(name))
    if not patched:
        return
    raise GeventPatchedError(
        "the dask backend cannot run in a process patched by gevent.monkey "
        f"(patched: {', '.join(patched)}), because the Dask client needs real "
        "threads and sockets; run the pipeline from a process that does not call "
        "gevent.monkey.patch_all(), for example a subprocess, and keep gevent in "
        "the task bodies, which run on the Dask workers",
        patched,
    )
