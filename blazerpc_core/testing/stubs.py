"""grpcio stubs compiled from a server's exported ``.proto``, each module in a descriptor pool of its own.

Many schemas (all named ``blaze_service.proto``) can then coexist in one test process.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path

from blazerpc_core.method import FILE_NAME


@dataclass
class Stubs:
    """grpcio modules compiled from an exported .proto."""

    pb2: types.ModuleType
    pb2_grpc: types.ModuleType


def compile_stubs(proto_text: str, directory: Path | None = None, *, file_name: str = FILE_NAME) -> Stubs:
    """Compile ``proto_text`` (saved as ``file_name``) with grpc_tools.protoc and import it with a private pool."""
    directory = Path(directory or tempfile.mkdtemp(prefix="blazerpc-stubs-"))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / file_name).write_text(proto_text)
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{directory}", f"--python_out={directory}",
         f"--grpc_python_out={directory}", str(directory / file_name)],
        check=True, capture_output=True,
    )
    stem = file_name.removesuffix(".proto")
    tag = f"_blazerpc_stub_{abs(hash(str(directory)))}"
    pb2_path = directory / f"{stem}_pb2.py"
    pb2_path.write_text(
        pb2_path.read_text().replace("_descriptor_pool.Default()", "_descriptor_pool.DescriptorPool()")
    )
    pb2 = _import(f"{tag}_pb2", pb2_path)
    grpc_path = directory / f"{stem}_pb2_grpc.py"
    grpc_path.write_text(grpc_path.read_text().replace(f"import {stem}_pb2 as", f"import {tag}_pb2 as"))
    return Stubs(pb2=pb2, pb2_grpc=_import(f"{tag}_pb2_grpc", grpc_path))


def _import(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def management_stubs(directory: Path | None = None) -> Stubs:
    """grpcio stubs of ``blazerpc.ManagementService`` (``ManagementServiceStub``, ``ModelRef``, ...)."""
    from blazerpc_core.defaults.management.descriptors import management_file
    from blazerpc_core.schema.proto_text import render_proto

    return compile_stubs(render_proto(management_file()), directory, file_name="management.proto")
