"""How a worker process is started: the Launcher seam and its implementations.

Private package; the public names (``Launcher``, ``WorkerHandle``,
``LocalLauncher``, ``InProcessLauncher``...) are re-exported by
``snakepit.pool``. A worker's start reads top-down in this folder:
``_base`` (the protocols and ``LocalLauncher``) -> ``_process`` (one exec'd
or forked worker process: ``spawn_worker``) -> ``_forkserver_client`` (the
host's end of the fork server) -> ``snakepit.worker._forkserver`` and
``snakepit.worker._main`` (inside the subprocess). ``_output`` drains a
worker's stdout/stderr; ``_rundir`` owns the run directory; ``_inprocess``
runs an adapter in the host process for tests.
"""
