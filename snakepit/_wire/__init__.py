"""What both sides of a worker speak: the protocol, the codec, frames, addresses, auth.

``_proto/`` (generated), ``_codec`` (payloads), ``_frames`` (length-prefixed
frames and the one ``FrameBatcher`` both ends of a channel use), ``_address``
(``unix:PATH`` / ``tcp:HOST:PORT``), ``_auth`` (secrets), ``_forkserver_protocol``
(what a host and its fork server say), ``_grpc_logging`` (grpc imported quietly),
``_session`` (a session's metadata as the requests carry it), ``_variables``
(a typed variable's spec and value: the host's store and a tool check them alike).

Private: nothing here is public API. The worker runtime (``snakepit.worker``,
which runs inside the subprocess) imports from here and from nothing else of
snakepit; the host side (``snakepit.pool``) imports from here too. Code in
this package imports nothing from either side.
"""
