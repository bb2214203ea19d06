"""The plugin system: entry points from installed distributions, overrides, listing, loud failures."""

from __future__ import annotations

import fractions
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from blazerpc_core import BlazeApp, PluginError, hookimpl
from blazerpc_core.plugins import DEFAULT_PLUGINS, describe_plugins, make_plugin_manager
from blazerpc_core.schema.fields import FieldMapping, T
from tests.apps import add_app

FIXTURES = Path(__file__).parent / "fixtures"


def pip_install_target(project: Path, target: Path) -> None:
    """Install ``project`` for real (wheel build, dist-info, entry points) into ``target``."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(project)],
        check=True, capture_output=True,
    )


@pytest.fixture
def installed_fraction_plugin(tmp_path, monkeypatch):
    """The fixture distribution, pip-installed into a directory on sys.path for this test only."""
    site = tmp_path / "site"
    pip_install_target(FIXTURES / "blazerpc-fraction-plugin", site)
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("blazerpc_fraction_plugin", None)


def test_installed_plugin_maps_a_custom_type_and_registers_a_model(
    installed_fraction_plugin, blazerpc_serve, blazerpc_connect
):
    app = BlazeApp()

    @app.model("third")
    def third(x: fractions.Fraction) -> fractions.Fraction:
        return x / 3

    server = blazerpc_serve(app)
    assert "rpc PredictHalf(HalfRequest) returns (HalfResponse);" in server.proto_text
    conn = blazerpc_connect(server)
    assert conn.stub.PredictThird(conn.pb2.ThirdRequest(x="1/2"), timeout=5).result == "1/6"
    assert conn.stub.PredictHalf(conn.pb2.HalfRequest(x="3"), timeout=5).result == "3/2"
    with pytest.raises(grpc.RpcError) as info:
        conn.stub.PredictHalf(conn.pb2.HalfRequest(x="one/two"), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'one/two' is not a fraction" in info.value.details()


def test_installed_plugin_is_listed_and_can_be_disabled_by_name(installed_fraction_plugin, monkeypatch):
    names = {row.name for row in describe_plugins(make_plugin_manager())}
    assert names >= {"fraction", *(name for name, _ in DEFAULT_PLUGINS)}
    rows = describe_plugins(make_plugin_manager(disabled=["fraction"]), disabled=["fraction"])
    assert [r.disabled for r in rows if r.name == "fraction"] == [True]
    monkeypatch.setenv("BLAZERPC_DISABLE_PLUGINS", "fraction")
    app = BlazeApp()
    with pytest.raises(Exception, match="Fraction"):
        @app.model("third")
        def third(x: fractions.Fraction) -> fractions.Fraction:
            return x


def test_blazerpc_plugins_command_lists_installed_plugins(installed_fraction_plugin):
    env_path = f"{installed_fraction_plugin}"
    result = subprocess.run(
        [sys.executable, "-m", "blazerpc_core.cli", "plugins"], capture_output=True, text=True,
        env={**_env(), "PYTHONPATH": env_path}, check=True,
    )
    assert "fraction" in result.stdout and "map_type, register_models" in result.stdout
    assert "builtin-types" in result.stdout


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("BLAZERPC_")}


def test_a_third_party_type_mapping_overrides_the_builtin_one(blazerpc_serve, blazerpc_connect):
    class FloatsAsStrings:
        @hookimpl
        def blazerpc_map_type(self, annotation, context):
            if annotation is float:
                return FieldMapping(T.TYPE_STRING, "decimal string", decode=float, encode=repr)
            return None

    app = BlazeApp(plugins=[FloatsAsStrings()])

    @app.model("add")
    def add(a: float, b: float) -> float:
        return a + b

    server = blazerpc_serve(app)
    assert "string a = 1;" in server.proto_text
    conn = blazerpc_connect(server)
    reply = conn.stub.PredictAdd(conn.pb2.AddRequest(a="0.5", b="0.25"))
    assert reply.result == "0.75"


def test_a_misspelled_hook_fails_loudly():
    class Typo:
        @hookimpl
        def blazerpc_register_model(self, register):  # missing "s"
            return None

    with pytest.raises(PluginError, match="blazerpc_register_model"):
        make_plugin_manager(plugins=[Typo()], load_entry_points=False)


def test_a_plugin_that_fails_to_import_names_itself(tmp_path, monkeypatch):
    project = tmp_path / "broken"
    (project / "blazerpc_broken_plugin").mkdir(parents=True)
    (project / "blazerpc_broken_plugin" / "__init__.py").write_text("import no_such_module_xyz\n")
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "blazerpc-broken-plugin"\nversion = "0.1.0"\n'
        '[project.entry-points."blazerpc.plugins"]\nbroken = "blazerpc_broken_plugin"\n'
        '[tool.setuptools]\npackages = ["blazerpc_broken_plugin"]\n'
    )
    site = tmp_path / "site"
    pip_install_target(project, site)
    monkeypatch.syspath_prepend(str(site))
    expected = r"plugin 'broken' \(blazerpc_broken_plugin\) failed to import.*no_such_module_xyz"
    with pytest.raises(PluginError, match=expected):
        make_plugin_manager()
    # Disabling it by name lets the server start anyway.
    make_plugin_manager(disabled=["broken"])


def test_disabling_a_default_plugin_removes_its_behaviour(blazerpc_serve, blazerpc_connect):
    server = blazerpc_serve(add_app(), disabled=["request-id"], load_entry_points=False)
    conn = blazerpc_connect(server)
    _, call = conn.stub.PredictAdd.with_call(conn.pb2.AddRequest(a=1, b=2), timeout=5,
                                             metadata=[("x-request-id", "abc")])
    assert "x-request-id" not in dict(call.trailing_metadata())
    pm = make_plugin_manager(disabled=["request-id"], load_entry_points=False)
    assert pm.get_plugin("request-id") is None


@pytest.mark.parametrize("essential", ["tensors", "builtin-types", "batching", "python-targets", "health",
                                       "reflection"])
def test_an_essential_default_plugin_cannot_be_disabled_and_says_so(essential):
    with pytest.raises(PluginError, match=rf"plugin '{essential}' cannot be disabled.*Essential plugins: "):
        make_plugin_manager(disabled=[essential], load_entry_points=False)


def test_disabling_an_unknown_plugin_is_an_error_listing_the_known_names():
    with pytest.raises(PluginError, match=r"cannot disable plugin 'nosuch': no plugin has that name\. Known "
                                          r"plugins: .*access-log"):
        make_plugin_manager(disabled=["nosuch"])


def test_startup_and_shutdown_hooks_run_once_each(blazerpc_serve):
    calls: list[str] = []

    class Lifecycle:
        @hookimpl
        async def blazerpc_startup(self, context):
            calls.append(f"startup:{len(context.models)}")

        @hookimpl
        def blazerpc_shutdown(self, context):
            calls.append("shutdown")

    app = BlazeApp()

    @app.model("one")
    def one(x: int) -> int:
        return x

    server = blazerpc_serve(app, plugins=[Lifecycle()])
    assert calls == ["startup:1"]
    server.stop()
    assert calls == ["startup:1", "shutdown"]


def test_two_services_declaring_the_same_path_are_refused():
    from blazerpc_core.errors import RegistrationError
    from blazerpc_core.testing import start_server

    class Shadow:
        @hookimpl
        def blazerpc_services(self, context):
            return [context_health_clone(context)]

    def context_health_clone(context):
        import grpclib.const

        class Clone:
            def __mapping__(self):
                return {"/grpc.health.v1.Health/Check": grpclib.const.Handler(
                    None, grpclib.const.Cardinality.UNARY_UNARY, None, None)}

        return Clone()

    app = BlazeApp()

    @app.model("one")
    def one(x: int) -> int:
        return x

    with pytest.raises(RegistrationError, match=r"/grpc\.health\.v1\.Health/Check"):
        start_server(app, plugins=[Shadow()])
