"""Generate snakepit/_wire/_proto/ from protos/, or check that the committed code matches.

Usage: ``python scripts/gen_proto.py`` (write) or ``python scripts/gen_proto.py --check``.
The generated code depends on the grpcio-tools version, which the ``dev``
extra pins exactly so that every machine generates the same bytes.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTOS = ROOT / "protos"
OUT = ROOT / "snakepit" / "_wire" / "_proto"
HEADER = "# Generated from protos/ by scripts/gen_proto.py. Do not edit.\n"
QUIET_IMPORT = "from snakepit._wire import _grpc_logging  # noqa: F401\n"


def generate(into: Path) -> dict[str, str]:
    """Run protoc on every .proto under protos/ and return {relative path: text}."""
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    import grpc_tools

    include = str(Path(grpc_tools.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={into}",
        f"--pyi_out={into}",
        f"--grpc_python_out={into}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    files: dict[str, str] = {}
    for path in sorted(into.rglob("*.py*")):
        text = path.read_text()
        # protoc writes absolute imports of the proto package (snakepit.v1);
        # the code lives in snakepit._wire._proto.
        text = re.sub(
            r"^from snakepit\.v1 import",
            "from snakepit._wire._proto.snakepit.v1 import",
            text,
            flags=re.M,
        )
        files[str(path.relative_to(into))] = HEADER + text
    for package in {str(Path(f).parent) for f in files} | {"snakepit", "."}:
        init = str(Path(package) / "__init__.py")
        files.setdefault(init, HEADER)
    # The *_pb2_grpc modules import grpc: whichever of them comes first, grpc's
    # logging is quieted (see snakepit/_wire/_grpc_logging.py).
    files["__init__.py"] += QUIET_IMPORT
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="fail if snakepit/_wire/_proto differs"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = generate(Path(tmp))
    if args.check:
        current = {
            str(p.relative_to(OUT)): p.read_text()
            for p in OUT.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        }
        if current == files:
            print(f"snakepit/_wire/_proto matches protos/ ({len(files)} files)")
            return 0
        for name in sorted(set(current) | set(files)):
            if current.get(name) != files.get(name):
                sys.stdout.writelines(
                    difflib.unified_diff(
                        current.get(name, "").splitlines(True),
                        files.get(name, "").splitlines(True),
                        f"committed/{name}",
                        f"generated/{name}",
                    )
                )
        print(
            "snakepit/_wire/_proto does not match protos/: run `make proto` and commit",
            file=sys.stderr,
        )
        return 1
    for old in OUT.rglob("*"):
        if old.is_file() and "__pycache__" not in old.parts:
            old.unlink()
    for name, text in files.items():
        target = OUT / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    print(f"wrote {len(files)} files to snakepit/_wire/_proto")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
