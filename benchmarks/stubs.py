"""Compile ``protos/bench.proto`` into grpcio and grpclib stubs, and tensor helpers.

The stubs are generated at run time (never checked in) so they always match the
installed protoc/protobuf versions. Output goes to ``benchmarks/_gen/<key>``,
keyed by the proto text and tool versions, so repeated runs and spawned worker
processes reuse one compilation. The modules are imported as top-level
``bench_pb2`` / ``bench_pb2_grpc`` / ``bench_grpc`` (that is how protoc makes
them refer to each other), so load them in processes that do not also import
another ``bench.proto`` into protobuf's default descriptor pool.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
PROTO_DIR = BENCH_DIR / "protos"
PROTO_FILE = PROTO_DIR / "bench.proto"
PACKAGE = "blazerpc"
SERVICE = "InferenceService"
SERVICE_FULL_NAME = f"{PACKAGE}.{SERVICE}"

# Environment variable that overrides where generated stubs are cached.
GEN_DIR_ENV = "BLAZERPC_BENCH_GEN_DIR"


@dataclass(frozen=True)
class Stubs:
    """The generated modules; message classes live in ``pb2``."""

    gen_dir: Path
    pb2: ModuleType  # messages (bench_pb2)
    grpclib: ModuleType  # grpclib base class and stub (bench_grpc)

    @property
    def pb2_grpc(self) -> ModuleType:
        """grpcio client/servicer (bench_pb2_grpc), imported on first use: the raw server never
        loads grpcio, so its memory is grpclib's alone."""
        return importlib.import_module("bench_pb2_grpc")


def _cache_key() -> str:
    """Key the cache on everything that changes the generated code."""
    h = hashlib.sha256(PROTO_FILE.read_bytes())
    for dist in ("grpcio-tools", "protobuf", "grpclib"):
        h.update(f"{dist}={metadata.version(dist)};".encode())
    h.update(sys.executable.encode())
    return h.hexdigest()[:16]


def default_gen_dir() -> Path:
    """Cache directory for stubs: ``$BLAZERPC_BENCH_GEN_DIR`` or ``benchmarks/_gen`` (git-ignored)."""
    base = os.environ.get(GEN_DIR_ENV)
    root = Path(base) if base else BENCH_DIR / "_gen"
    return root / _cache_key()


def _write_grpclib_plugin(directory: Path) -> Path:
    """Write a protoc plugin shim bound to this interpreter.

    Relying on ``protoc-gen-grpclib_python`` being on PATH breaks under
    virtualenvs/pyenv shims; a shim that runs ``sys.executable`` cannot.
    """
    plugin = directory / "protoc-gen-grpclib_python"
    plugin.write_text(f"#!{sys.executable}\nfrom grpclib.plugin.main import main\n\nmain()\n")
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return plugin


def compile_protos(out_dir: Path | None = None, *, force: bool = False) -> Path:
    """Generate bench_pb2.py, bench_pb2_grpc.py and bench_grpc.py; return their dir.

    Compiles into a scratch directory and renames it into place, so concurrent
    callers (e.g. several spawned load-generator processes) never see a
    half-written package.
    """
    target = Path(out_dir) if out_dir is not None else default_gen_dir()
    marker = target / "bench_grpc.py"
    if marker.exists() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".gen-", dir=target.parent))
    try:
        plugin = _write_grpclib_plugin(scratch)
        cmd = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"--proto_path={PROTO_DIR}",
            f"--plugin=protoc-gen-grpclib_python={plugin}",
            f"--python_out={scratch}",
            f"--pyi_out={scratch}",
            f"--grpc_python_out={scratch}",
            f"--grpclib_python_out={scratch}",
            str(PROTO_FILE),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"protoc failed ({proc.returncode}): {proc.stderr.strip()}")
        plugin.unlink()
        if force and target.exists():
            shutil.rmtree(target)
        try:
            scratch.rename(target)
        except OSError:
            if not marker.exists():  # lost a race only if the winner finished
                raise
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return target


def load_stubs(gen_dir: Path | None = None) -> Stubs:
    """Compile if needed, put the gen dir on sys.path and import the modules.

    The generated grpc modules import ``bench_pb2`` as a top-level module,
    hence the sys.path entry.
    """
    directory = compile_protos(gen_dir)
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    return Stubs(
        gen_dir=directory,
        pb2=importlib.import_module("bench_pb2"),
        grpclib=importlib.import_module("bench_grpc"),
    )


def array_to_tensor(pb2: ModuleType, array: np.ndarray[Any, Any]) -> Any:
    """Encode an array as TensorProto (C order, little-endian, numpy dtype name)."""
    le = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return pb2.TensorProto(shape=list(le.shape), dtype=array.dtype.name, data=le.tobytes())


def tensor_to_array(tensor: Any) -> np.ndarray[Any, Any]:
    """Decode a TensorProto without copying the payload."""
    dtype = np.dtype(tensor.dtype).newbyteorder("<")
    return np.frombuffer(tensor.data, dtype=dtype).reshape(tuple(tensor.shape))


def main() -> None:
    """CLI: ``python benchmarks/stubs.py [--force]`` prints the gen dir."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument("--force", action="store_true", help="recompile even if cached")
    args = parser.parse_args()
    print(compile_protos(args.out_dir, force=args.force))


if __name__ == "__main__":
    main()
