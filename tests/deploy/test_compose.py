"""docker-compose.yml, its CPU variant, the backend-only file, .env.example and backend/Dockerfile agree with each other, with
what the backend reads (backend/settings.py) and with what Label Studio 1.23.2 reads (its installed
source). No Docker engine is needed: these are static checks of the files a user runs."""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_CPU = ROOT / "docker-compose.cpu.yml"
COMPOSE_BACKEND = ROOT / "docker-compose.backend.yml"  # the backend alone, for a Label Studio elsewhere
DOCKERFILE = ROOT / "backend" / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"


class _ComposeLoader(yaml.SafeLoader):
    """SafeLoader plus Compose's merge tags (`!reset`, `!override`)."""


def _tagged(loader, node):
    if isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_scalar(node)
    return {"__tag__": node.tag, "value": value}


_ComposeLoader.add_constructor("!reset", _tagged)
_ComposeLoader.add_constructor("!override", _tagged)


def load(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=_ComposeLoader)


@pytest.fixture(scope="module")
def compose() -> dict:
    return load(COMPOSE)


@pytest.fixture(scope="module")
def backend_env_names() -> set[str]:
    text = (ROOT / "backend" / "settings.py").read_text()
    names: set[str] = set()
    for match in re.finditer(r'get\.\w+\(([^)]*)\)', text):
        names.update(re.findall(r'"([A-Z][A-Z0-9_]+)"', match.group(1)))
    # Label Studio's address and key are read by the adapters' one reader, which settings.py calls
    shared = (ROOT / "labelstudio" / "environment.py").read_text()
    for match in re.finditer(r'_first\(environ, ([^)]*)\)', shared):
        names.update(re.findall(r'"([A-Z][A-Z0-9_]+)"', match.group(1)))
    assert {"GROUNDING_DINO_MODEL", "LABEL_STUDIO_URL", "BASIC_AUTH_USER"} <= names, names
    return names


@pytest.fixture(scope="module")
def label_studio_env_reader():
    """A predicate: does Label Studio 1.23.2 read this environment variable? From its installed source."""
    spec = importlib.util.spec_from_file_location("ls_harness", ROOT / "tests" / "e2e" / "ls_harness.py")
    harness = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("ls_harness", harness)
    spec.loader.exec_module(harness)
    src = harness.site_packages() / "label_studio"
    via_get_env, direct = set(), set()
    for py in src.rglob("*.py"):
        if "/tests/" in str(py):
            continue
        text = py.read_text(errors="replace")
        via_get_env.update(re.findall(r'get_(?:bool_)?env(?:_list(?:_int)?)?\(\s*[\'"]([A-Z][A-Z0-9_]+)[\'"]', text))
        direct.update(re.findall(r'os\.(?:environ\.get|getenv|environ\.setdefault)\(\s*[\'"]([A-Z][A-Z0-9_]+)[\'"]', text))
        direct.update(re.findall(r'os\.environ\[\s*[\'"]([A-Z][A-Z0-9_]+)[\'"]\s*\]', text))
    assert "ML_BLOCK_LOCAL_IP" in via_get_env and "USER_TOKEN" in via_get_env

    def reads(name: str) -> bool:
        # label_studio.core.utils.params.get_env(X) reads LABEL_STUDIO_X, HEARTEX_X and X
        for prefix in ("LABEL_STUDIO_", "HEARTEX_"):
            if name.startswith(prefix) and name[len(prefix):] in via_get_env:
                return True
        return name in via_get_env or name in direct

    return reads


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def test_compose_files_parse_with_the_expected_services(compose):
    assert set(compose["services"]) == {"label-studio", "backend"}
    cpu = load(COMPOSE_CPU)
    assert set(cpu["services"]) == {"backend"}


def test_label_studio_image_is_pinned_to_1_23_2(compose):
    assert compose["services"]["label-studio"]["image"] == "heartexlabs/label-studio:1.23.2"


def test_every_backend_variable_is_read_by_the_backend(compose, backend_env_names):
    env = env_of(compose["services"]["backend"])
    unknown = set(env) - backend_env_names
    assert not unknown, f"backend service sets variables backend/settings.py never reads: {unknown}"
    cpu_env = env_of(load(COMPOSE_CPU)["services"]["backend"])
    assert not set(cpu_env) - backend_env_names
    alone_env = env_of(load(COMPOSE_BACKEND)["services"]["backend"])
    assert not set(alone_env) - backend_env_names


def test_every_label_studio_variable_is_read_by_label_studio(compose, label_studio_env_reader):
    env = env_of(compose["services"]["label-studio"])
    unknown = [name for name in env if not label_studio_env_reader(name)]
    assert not unknown, f"label-studio service sets variables Label Studio 1.23.2 never reads: {unknown}"
    # the reader is not a yes-man
    assert not label_studio_env_reader("LABEL_STUDIO_NO_SUCH_SETTING_XYZ")


def test_label_studio_lets_the_backend_on_a_private_address(compose):
    env = env_of(compose["services"]["label-studio"])
    assert env["ML_BLOCK_LOCAL_IP"] == "false"
    assert env["USE_DEFAULT_BANNED_SUBNETS"] == "false"


def test_backend_points_at_label_studio_by_service_name_and_port(compose):
    services = compose["services"]
    env = env_of(services["backend"])
    url = env["LABEL_STUDIO_URL"]
    match = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", url)
    assert match, url
    host, port = match.group(1), match.group(2)
    assert host in services
    ls_ports = [str(p).rsplit(":", 1)[-1] for p in services[host]["ports"]]
    assert port in ls_ports, (port, ls_ports)
    # the API key comes from .env and is the token Label Studio gives its first user
    ls_env = env_of(services["label-studio"])
    assert "LABEL_STUDIO_API_KEY" in env["LABEL_STUDIO_API_KEY"]
    assert "LABEL_STUDIO_API_KEY" in ls_env["LABEL_STUDIO_USER_TOKEN"]
    assert ls_env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"


def test_backend_port_matches_the_dockerfile(compose):
    ports = [str(p) for p in compose["services"]["backend"]["ports"]]
    assert any(p.endswith(":9090") for p in ports), ports
    text = DOCKERFILE.read_text()
    assert "EXPOSE 9090" in text
    assert '"--port", "9090"' in text and "127.0.0.1:9090/health" in text


def _mounts(service: dict) -> dict[str, str]:
    out = {}
    for item in service["volumes"]:
        source, target = item.split(":")[:2]
        out[source] = target
    return out


def test_shared_local_files_volume_agrees(compose):
    services, volumes = compose["services"], compose["volumes"]
    ls_mounts, be_mounts = _mounts(services["label-studio"]), _mounts(services["backend"])
    for mounts in (ls_mounts, be_mounts):
        for source in mounts:
            assert source in volumes, f"volume {source} is not declared"
    ls_root = env_of(services["label-studio"])["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"]
    be_root = env_of(services["backend"])["LOCAL_FILES_DOCUMENT_ROOT"]
    shared = [v for v in ls_mounts if ls_mounts[v] == ls_root]
    assert shared, f"{ls_root} is not a volume of label-studio"
    assert be_mounts.get(shared[0]) == be_root, "the backend must see the same files at LOCAL_FILES_DOCUMENT_ROOT"
    assert any(str(v).endswith(":ro") for v in services["backend"]["volumes"] if str(v).startswith(shared[0]))


def test_hub_cache_is_a_volume_at_the_images_hf_home(compose):
    hf_home = re.search(r"HF_HOME=(\S+)", DOCKERFILE.read_text()).group(1)
    mounts = _mounts(compose["services"]["backend"])
    assert hf_home in mounts.values(), (hf_home, mounts)


def test_gpu_reservation_and_its_cpu_reset(compose):
    devices = compose["services"]["backend"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    cpu = load(COMPOSE_CPU)["services"]["backend"]
    assert cpu["deploy"]["__tag__"] == "!reset"
    assert env_of(cpu)["DEVICE"] == "cpu"


def test_backend_builds_from_the_dockerfile(compose):
    build = compose["services"]["backend"]["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE


def test_dockerfile_pinned_base_non_root_healthcheck():
    lines = [l.strip() for l in DOCKERFILE.read_text().splitlines() if l.strip() and not l.strip().startswith("#")]
    base = [l for l in lines if l.startswith("FROM ")]
    assert len(base) == 1
    image = base[0].split()[1]
    # Python and Debian release pinned (the CUDA torch build and its version: tests/deploy/test_pins.py)
    assert re.fullmatch(r"python:3\.\d+-slim-(bookworm|trixie)", image), image
    users = [l.split()[1] for l in lines if l.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), users
    assert any(l.startswith("HEALTHCHECK") for l in lines)
    assert "/health" in DOCKERFILE.read_text()
    cmd = [l for l in lines if l.startswith("CMD ")][-1]
    assert '"-m", "backend"' in cmd
    # our package is installed, not only copied
    assert any(re.match(r"RUN pip install .*\s\.(\s|$)", l) for l in lines)


def test_dockerfile_preloads_the_tcmalloc_it_installs():
    from runtime.allocator import TCMALLOC_PATTERNS

    text = DOCKERFILE.read_text()
    preload = re.search(r"^ENV LD_PRELOAD=(\S+)$", text, re.M)
    assert preload, "no LD_PRELOAD in the Dockerfile"
    path = preload.group(1)
    assert "apt-get install" in text and "libtcmalloc-minimal4" in text
    assert "ln -s " in text and text.index(path) < preload.start()  # the link is made before it is used
    assert path in TCMALLOC_PATTERNS  # the backend's startup check finds the same file
    # Set before the CMD runs (ENV after USER would still apply; before the pip install it would also
    # preload into pip: harmless). The HEALTHCHECK's python inherits it too.
    assert preload.start() < text.index("CMD [")


def env_example() -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )


def test_env_example_covers_every_variable_compose_needs(compose):
    text = COMPOSE.read_text() + COMPOSE_CPU.read_text() + COMPOSE_BACKEND.read_text()
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    optional = set(re.findall(r"\$\{([A-Z_]+):-", text))
    example = env_example()
    assert required <= set(example), required - set(example)
    assert not set(example) - required - optional, "the example sets variables compose never uses"
    # every ${VAR} of the backend-only file, whatever its form, is in the example
    used = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE_BACKEND.read_text()))
    assert {"LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "BACKEND_BIND_ADDRESS", "BACKEND_PORT"} <= used
    assert used <= set(example), used - set(example)


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${VAR:-default}` and `${VAR:?error}` (unset or empty: the default, or the error)."""
    def one(match):
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        if op == ":?":
            raise ValueError(f"{name}: {arg}")
        return arg or ""

    return re.sub(r"\$\{([A-Z_]+)(:[-?])?([^}]*)\}", one, value)


@pytest.fixture(scope="module")
def alone() -> dict:
    return load(COMPOSE_BACKEND)


def test_backend_only_file_runs_the_backend_without_label_studio(compose, alone):
    assert set(alone["services"]) == {"backend"} and alone["name"] == compose["name"]  # the same volumes
    service, main = alone["services"]["backend"], compose["services"]["backend"]
    assert "depends_on" not in service and "label-studio" not in COMPOSE_BACKEND.read_text()
    assert (service["build"], service["image"]) == (main["build"], main["image"])
    # the GPU reservation of the main file; docker-compose.cpu.yml resets it the same way
    assert service["deploy"] == main["deploy"]
    assert set(load(COMPOSE_CPU)["services"]) <= set(alone["services"])
    # the hub cache and what Start Training learned, on the main file's volumes; no Local Storage mount
    # (Label Studio's files are on its machine: the backend downloads them through its API)
    assert _mounts(service) == {k: v for k, v in _mounts(main).items() if k in ("hf-cache", "backend-state")}
    assert set(alone["volumes"]) == {"hf-cache", "backend-state"}


def test_backend_only_file_takes_address_key_and_binding_from_env(compose, alone):
    env, main_env = env_of(alone["services"]["backend"]), env_of(compose["services"]["backend"])
    # the main file's settings, but Label Studio's address from .env and no shared Local Storage
    assert set(env) == set(main_env) - {"LOCAL_FILES_DOCUMENT_ROOT"}
    assert {k: v for k, v in env.items() if k != "LABEL_STUDIO_URL"} == {
        k: v for k, v in main_env.items() if k in env and k != "LABEL_STUDIO_URL"}
    assert re.fullmatch(r"\$\{LABEL_STUDIO_URL:\?[^}]+\}", env["LABEL_STUDIO_URL"])
    assert re.fullmatch(r"\$\{LABEL_STUDIO_API_KEY:\?[^}]+\}", env["LABEL_STUDIO_API_KEY"])
    assert env["ML_TIMEOUT_PREDICT"] == main_env["ML_TIMEOUT_PREDICT"] == "${ML_TIMEOUT_PREDICT:-100}"
    assert env["BASIC_AUTH_USER"] == "${BASIC_AUTH_USER:-}" and env["BASIC_AUTH_PASS"] == "${BASIC_AUTH_PASS:-}"
    (port,) = alone["services"]["backend"]["ports"]
    # .env.example as shipped leaves the address and the binding empty: compose stops with what to set
    example = env_example()
    for name in ("LABEL_STUDIO_URL", "BACKEND_BIND_ADDRESS"):
        assert example[name] == ""
    with pytest.raises(ValueError, match="BACKEND_BIND_ADDRESS: set BACKEND_BIND_ADDRESS in .env"):
        interpolate(str(port), example)
    with pytest.raises(ValueError, match="LABEL_STUDIO_URL: set LABEL_STUDIO_URL in .env"):
        interpolate(env["LABEL_STUDIO_URL"], example)
    filled = {**example, "LABEL_STUDIO_URL": "http://ls.example.org:8080", "BACKEND_BIND_ADDRESS": "10.0.0.5"}
    assert interpolate(str(port), filled) == "10.0.0.5:9090:9090"  # host address : host port : container port
    assert interpolate(str(port), {**filled, "BACKEND_PORT": "9191"}) == "10.0.0.5:9191:9090"
    assert interpolate(env["LABEL_STUDIO_URL"], filled) == "http://ls.example.org:8080"
    # the main file keeps its port on this machine only
    assert [str(p) for p in compose["services"]["backend"]["ports"]] == ["127.0.0.1:${BACKEND_PORT:-9090}:9090"]


def test_dockerignore_keeps_the_context_small():
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", ".venv-*", ".env"):
        assert entry in ignored


def test_the_image_copies_every_package_the_project_installs():
    """pyproject's packages.find and the Dockerfile's COPY lines name the same top-level packages, each of
    them a folder with an __init__.py: a package added to one and not the other fails here, not in the image."""
    find = re.search(r"^\[tool\.setuptools\.packages\.find\]\ninclude = \[([^\]]*)\]", (ROOT / "pyproject.toml").read_text(), re.M)
    packages = set(re.findall(r'"(\w+)\*"', find.group(1)))  # (tomllib is Python 3.11+; we support 3.10)
    copied = {m.group(1) for m in re.finditer(r"^COPY (\w+) \./(\w+)$", DOCKERFILE.read_text(), re.M) if m.group(1) == m.group(2)}
    assert packages == copied
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages == on_disk
