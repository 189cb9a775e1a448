"""What both sides of a worker speak: the protocol, the codec, frames, addresses, auth.

Private: nothing here is public API. The worker runtime (``snakepit.worker``,
which runs inside the subprocess) imports from here and from nothing else of
snakepit; the host side (``snakepit.pool``) imports from here too. Code in
this package imports nothing from either side.
"""
