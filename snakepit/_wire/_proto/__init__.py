# Generated from protos/ by scripts/gen_proto.py. Do not edit.
from snakepit._wire import _grpc_logging  # noqa: F401
