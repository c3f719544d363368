"""Static checks of the deployment files: compose, Dockerfile, lock, k8s, monitoring.

No Docker engine and no cluster are needed: commands are resolved against the real CLI
parser, Kubernetes objects are rendered by tests/ops/kustomize.py and validated against
the Kubernetes 1.30 schemas (kubernetes-validate) and a vendored KEDA schema.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

from contract.settings import ENV_PREFIX, Settings
from previewvec.cli import build_parser
from tests.ops import kustomize
from tests.ops.metrics import dashboard_exprs, metric_names, rule_exprs, scraped

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
K8S = ROOT / "k8s"
SCHEMAS = Path(__file__).parent / "schemas"
K8S_VERSION = "1.30"
OVERLAYS = ("base", "overlays/dev", "overlays/prod")
IMAGE = "previewvec"  # the placeholder name every overlay maps with `images:`
CELERY_COMMANDS = {"worker", "flower", "inspect"}
IMAGE_SCRIPTS = {"/opt/previewvec/healthcheck.py": INFRA / "healthcheck.py",
                 "/opt/previewvec/runs_exporter.py": INFRA / "monitoring" / "runs_exporter.py"}
SECRET_WORDS = ("SECRET", "PASSWORD", "TOKEN", "BASIC_AUTH", "ACCESS_KEY")


def subcommands() -> set[str]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    return set(sub.choices)


class ComposeLoader(yaml.SafeLoader):
    """YAML with Compose's merge tags (!reset, !override), read as plain values."""


for _tag in ("!reset", "!override"):
    ComposeLoader.add_constructor(
        _tag, lambda loader, node: (loader.construct_sequence(node)
                                    if isinstance(node, yaml.SequenceNode)
                                    else loader.construct_mapping(node)
                                    if isinstance(node, yaml.MappingNode)
                                    else loader.construct_scalar(node)))


def compose(name: str = "docker-compose.yml") -> dict:
    return yaml.load((INFRA / name).read_text(), Loader=ComposeLoader)


def our_services() -> dict[str, dict]:
    """Compose services that run the previewvec image."""
    return {name: svc for name, svc in compose()["services"].items()
            if svc.get("build", {}).get("dockerfile") == "infra/Dockerfile"}


def rendered(overlay: str) -> list[dict]:
    return kustomize.build(K8S / overlay)


def our_containers(docs: list[dict]) -> list[tuple[str, dict]]:
    out = []
    for doc in docs:
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            if c["image"].split(":")[0].endswith(IMAGE):
                out.append((f"{doc['kind']}/{doc['metadata']['name']}/{c['name']}", c))
    return out


def check_command(argv: list[str], where: str) -> str | None:
    """Assert argv is a real entry point of the image; returns a skip reason or None."""
    assert argv, f"{where}: empty command"
    if argv[0] == "previewvec":
        if argv[1] not in subcommands():
            if argv[1] in ("api", "submit"):
                return f"`previewvec {argv[1]}` not in the CLI yet (being added)"
            pytest.fail(f"{where}: `previewvec {argv[1]}` is not a previewvec command")
        return None
    if argv[0] == "celery":
        assert argv[1:3] == ["-A", "workers.app"], f"{where}: celery must use -A workers.app"
        assert argv[3] in CELERY_COMMANDS, f"{where}: unexpected celery command {argv[3]}"
        assert importlib.util.find_spec("workers.app"), "workers.app is not importable"
        if argv[3] == "flower":
            from flower.options import options

            for arg in argv[4:]:
                name = arg.lstrip("-").split("=", 1)[0].replace("_", "-")
                assert name in options._options, f"{where}: unknown Flower option {arg}"
        return None
    if argv[0] == "python" and argv[1] in IMAGE_SCRIPTS:
        assert IMAGE_SCRIPTS[argv[1]].is_file()
        return None
    if argv[0] == "cp":  # the numba cache seed init container
        return None
    pytest.fail(f"{where}: {argv} is not an entry point of the image")


# ---------------------------------------------------------------- docker compose


def test_compose_parses_and_has_every_role() -> None:
    services = compose()["services"]
    for name in ("redis", "minio", "minio-init", "worker", "reducer", "api", "flower",
                 "prometheus", "grafana", "redis-exporter", "runs-exporter"):
        assert name in services, name
    redis = services["redis"]
    assert "--appendonly" in redis["command"] and "yes" in redis["command"]
    assert "healthcheck" in redis
    assert "container_name" not in services["worker"], "worker must be scalable"
    assert services["worker"]["stop_grace_period"] == "360s"
    assert services["minio-init"]["restart"] == "no"
    assert "mc mb" in services["minio-init"]["command"][0]
    for name in ("prometheus", "grafana", "redis-exporter", "runs-exporter"):
        assert services[name]["profiles"] == ["monitoring"], name


# Which secrets each service may get (everything else it gets must be a non-secret setting).
SERVICE_SECRETS = {
    "worker": {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"},
    "reducer": {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PREVIEWVEC_VECTORIZE_API_TOKEN"},
    "api": {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PREVIEWVEC_VECTORIZE_API_TOKEN",
            "PREVIEWVEC_API_TOKENS"},
    "flower": {"FLOWER_BASIC_AUTH"},
    "runs-exporter": set(),
    "minio": {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"},
    "minio-init": {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"},
    "grafana": {"GF_SECURITY_ADMIN_PASSWORD"},
}


def secret_names() -> set[str]:
    """Every secret variable: .env.example's secret-looking keys and Settings' secrets."""
    names = {ENV_PREFIX + f.name.upper() for f in Settings.__dataclass_fields__.values()
             if not f.repr}
    for line in (ROOT / ".env.example").read_text().splitlines():
        key = line.partition("=")[0].strip()
        if key and not key.startswith("#") and any(w in key for w in SECRET_WORDS):
            names.add(key)
    return names


def service_env(svc: dict) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {k: str(v) for k, v in env.items()}


def test_compose_gives_each_service_only_its_secrets() -> None:
    services = compose()["services"]
    secrets = secret_names()
    assert {"AWS_SECRET_ACCESS_KEY", "FLOWER_BASIC_AUTH", "PREVIEWVEC_API_TOKENS",
            "PREVIEWVEC_VECTORIZE_API_TOKEN", "GF_SECURITY_ADMIN_PASSWORD"} <= secrets

    def given(svc: dict) -> set[str]:  # secrets by name, or interpolated into a value
        env = service_env(svc)
        used = set(env) | {v for value in env.values()
                           for v in re.findall(r"\$\{([A-Z0-9_]+)", value)}
        return used & secrets

    for name, svc in services.items():
        assert "env_file" not in svc, f"{name}: env_file hands every secret in it over"
        assert given(svc) <= SERVICE_SECRETS.get(name, set()), f"{name} gets {given(svc)}"
    for name, allowed in SERVICE_SECRETS.items():
        assert allowed <= given(services[name]), f"{name} lacks {allowed}"


def test_compose_passes_every_setting_and_keeps_the_image_defaults() -> None:
    text = (INFRA / "Dockerfile").read_text()
    image_env = dict(re.findall(r"^\s+(PREVIEWVEC_[A-Z_]+)=(\S+)", text, re.M))
    assert image_env  # the image sets its cache dir, store and index
    secrets = secret_names()
    for name in ("worker", "reducer", "api"):
        env = service_env(compose()["services"][name])
        for spec in Settings.__dataclass_fields__.values():
            key = ENV_PREFIX + spec.name.upper()
            if key in secrets:
                continue
            assert key in env, f"{name}: {key} is not passed from .env"
            if key == "PREVIEWVEC_CACHE_DIR":  # baked into the image: never the host's
                assert env[key] == image_env[key], (name, env[key])
            elif key in image_env:  # an empty value would override the image's own
                assert env[key].endswith(f":-{image_env[key]}}}"), (name, key, env[key])
        assert env["PREVIEWVEC_BROKER_URL"] == "redis://redis:6379/0"


def test_compose_overrides_for_offline_machines_and_the_stack_test() -> None:
    services = compose()["services"]
    offline = compose("docker-compose.offline.yml")["services"]
    # The stand-ins replace exactly the registry images; previewvec's own are untouched.
    registry = {n for n, s in services.items() if "build" not in s}
    assert set(offline) == registry
    assert "--appendonly" in offline["redis"]["command"]
    assert offline["minio"]["command"][0] == "moto_server"
    stacktest = compose("docker-compose.stacktest.yml")["services"]
    assert stacktest["media"]["volumes"][0].startswith("./stacktest/media.py:")
    for name, svc in services.items():
        if svc.get("ports") and name != "grafana":  # grafana is left out offline
            assert name in stacktest and "ports" in stacktest[name], (
                f"{name} publishes host ports: the stack test must reset them")
    assert "Compose v2" in (INFRA / "docker-compose.yml").read_text()


def test_compose_flower_auth_and_persistence() -> None:
    flower = compose()["services"]["flower"]
    assert flower["command"][:2] == ["previewvec", "flower"], "the login check runs first"
    command = " ".join(flower["command"])
    assert "--db /data/flower.db" in command
    assert "basic_auth" not in command, "credentials must come from FLOWER_BASIC_AUTH"
    assert any(v.startswith("flower-data:/data") for v in flower["volumes"])
    env_example = (ROOT / ".env.example").read_text()
    assert re.search(r"^FLOWER_BASIC_AUTH=", env_example, re.M)


@pytest.mark.parametrize("service", sorted(our_services()))
def test_compose_commands_are_real_entry_points(service: str) -> None:
    svc = our_services()[service]
    argv = [re.sub(r"\$\{[^}]*:-([^}]*)\}", r"\1", str(a)) for a in svc["command"]]
    reason = check_command(argv, f"compose service {service}")
    if reason:
        pytest.skip(reason)
    if argv[:2] == ["previewvec", "worker"]:
        assert "--concurrency" in argv


def test_env_example_lists_every_setting_without_secrets() -> None:
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    for spec in Settings.__dataclass_fields__.values():
        assert ENV_PREFIX + spec.name.upper() in values, spec.name
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3",
                "AWS_DEFAULT_REGION", "FLOWER_BASIC_AUTH", "GF_SECURITY_ADMIN_USER",
                "GF_SECURITY_ADMIN_PASSWORD"):
        assert key in values, key
    for key, value in values.items():
        if any(word in key for word in SECRET_WORDS):
            assert value == "", f".env.example must not hold a value for {key}"
    Settings.from_env({k: v for k, v in values.items() if k.startswith(ENV_PREFIX)})


# ---------------------------------------------------------------- image


def dockerignored(path: str) -> bool:
    ignored = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/").removeprefix("**/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p.rpartition("/")[2], pattern)
               for p in prefixes):
            ignored = not negate
    return ignored


def test_dockerfile_structure() -> None:
    text = (INFRA / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+([\w-]+))?", text, re.M)
    assert [s[1] for s in stages] == ["base-python", "base-debian", "base", "builder",
                                      "runtime"]
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.M)
    # Either base, by build argument; builder and runtime both stand on the chosen one.
    assert re.search(r"^ARG BASE=python$", text, re.M)
    assert stages[2][0] == "base-${BASE}" and stages[3][0] == stages[4][0] == "base"
    assert not re.search(r"^# ?syntax=", text, re.M), "a syntax line pulls a frontend image"
    # pip's CA bundle and index are BuildKit secrets, never layers.
    for run in re.findall(r"^RUN .*?(?<!\\)\n", text, re.M | re.S):
        if "pip install" in run:
            assert "--mount=type=secret,id=cacert" in run and "pip-secrets pip" in run
    assert "ca-certificates.crt" not in text.split("ARG PYTHON_IMAGE")[1]
    assert "--require-hashes" in text and "infra/requirements.lock" in text
    assert "COPY --from=builder /opt/venv /opt/venv" in text
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    # numba's cache location is derived (keyed) by workers/jitcache.py, never set apart.
    assert "NUMBA_CACHE_DIR" not in text
    assert "PREVIEWVEC_CACHE_DIR=/app/.cache" in text
    assert "jitcache.warm(Settings.from_env())" in text
    assert re.search(r"^HEALTHCHECK .*\n?.*healthcheck\.py", text, re.M)
    assert 'ENTRYPOINT ["tini", "--"]' in text
    # The warm-up runs after USER (the cache belongs to the runtime user) and the
    # settings agree with the CLI: PREVIEWVEC_CACHE_DIR/numba holds numba's caches.
    assert text.index("jitcache.warm(") > text.rindex("USER ")
    assert Settings.from_env({"PREVIEWVEC_CACHE_DIR": "/app/.cache"}).numba_cache_dir == Path(
        "/app/.cache/numba")


def test_dockerfile_copies_exist_and_are_not_dockerignored() -> None:
    text = (INFRA / "Dockerfile").read_text()
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M):
        sources = line.split()[:-1]
        for source in sources:
            assert (ROOT / source).exists(), source
            assert not dockerignored(source), f"{source} is excluded by .dockerignore"
    for excluded in (".venv", ".git", "tests", "data", ".env"):
        assert dockerignored(excluded), excluded


def test_lock_pins_every_runtime_dependency() -> None:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    lock = (INFRA / "requirements.lock").read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", lock, re.M))
    pins = {canonicalize_name(k): v for k, v in pins.items()}
    hashes = re.findall(r"--hash=sha256:[0-9a-f]{64}", lock)
    assert len(hashes) == len(pins), "every pin needs its sha256 (--require-hashes)"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    stale = []
    for raw in project["dependencies"]:
        req = Requirement(raw)
        version = pins.get(canonicalize_name(req.name))
        if version is None or not req.specifier.contains(version, prereleases=True):
            stale.append(raw)
    assert not stale, (f"infra/requirements.lock is stale for {stale}: "
                       "run `.venv/bin/python infra/lock.py`")
    for test_only in ("pytest", "moto", "ruff", "hypothesis"):
        assert test_only not in pins, f"{test_only} must not be in the image"
    # benchmarks/peers.py's Essentia and madmom are benchmark dependencies (the "peers"
    # extra), never runtime ones; so is the API's pandas (the "analysis" extra).
    runtime = {canonicalize_name(Requirement(raw).name) for raw in project["dependencies"]}
    for extra in ("peers", "test", "analysis"):
        for raw in project["optional-dependencies"][extra]:
            name = canonicalize_name(Requirement(raw).name)
            assert name not in runtime, f"{name} ({extra} extra) must not be a runtime dependency"
    for peer in project["optional-dependencies"]["peers"]:
        name = canonicalize_name(Requirement(peer).name)
        assert name not in pins, f"{name} must not be in the image"


def roles() -> list[list[str]]:
    seen: dict[str, list[str]] = {}
    for svc in our_services().values():
        argv = [str(a) for a in svc["command"]]
        if argv[0] == "previewvec":
            seen.setdefault(argv[1], argv[:2])
    for overlay in OVERLAYS:
        for _, c in our_containers(rendered(overlay)):
            argv = c.get("args", [])
            if argv and argv[0] == "previewvec":
                seen.setdefault(argv[1], argv[:2])
    for extra in ("enqueue", "status", "failures", "retry", "reindex", "submit"):
        seen.setdefault(extra, ["previewvec", extra])
    return [seen[k] for k in sorted(seen)]


def test_cli_help() -> None:
    out = subprocess.run([sys.executable, "-m", "previewvec.cli", "--help"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "COMMAND" in out.stdout


@pytest.mark.parametrize("argv", roles(), ids=lambda a: " ".join(a))
def test_role_help(argv: list[str]) -> None:
    if argv[1] not in subcommands():
        pytest.skip(f"`previewvec {argv[1]}` is not in the CLI yet (other engineers add it)")
    out = subprocess.run([sys.executable, "-m", "previewvec.cli", argv[1], "--help"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert f"usage: previewvec {argv[1]}" in out.stdout


def test_healthcheck_role_detection() -> None:
    spec = importlib.util.spec_from_file_location("healthcheck", INFRA / "healthcheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.detect_role(["tini", "--", "previewvec", "worker", "--concurrency", "2"]) \
        == "worker"
    assert module.detect_role(["tini", "--", "celery", "-A", "workers.app", "flower"]) \
        == "flower"
    assert module.detect_role(["tini", "--", "previewvec", "api", "--port", "8000"]) == "api"
    assert module.detect_role(["tini", "--", "previewvec", "reduce", "--follow"]) == "reducer"
    assert module.option(["x", "--port=5555"], "--port", "1") == "5555"


# ---------------------------------------------------------------- kubernetes


def validate(doc: dict) -> None:
    import kubernetes_validate

    if doc["apiVersion"].startswith("keda.sh/"):
        schema = {"ScaledObject": "keda-scaledobject.json",
                  "TriggerAuthentication": "keda-triggerauthentication.json"}[doc["kind"]]
        jsonschema.validate(doc, json.loads((SCHEMAS / schema).read_text()))
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def hpa_overlay(tmp_path: Path) -> Path:
    overlay = tmp_path / "prod-hpa"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [str(K8S / "overlays" / "prod")],
        "components": [str(K8S / "components" / "hpa")]}))
    return overlay


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_manifests_validate(overlay: str) -> None:
    docs = rendered(overlay)
    assert docs
    for doc in docs:
        try:
            validate(doc)
        except Exception as exc:
            pytest.fail(f"{overlay}: {doc['kind']}/{doc['metadata']['name']}: {exc}")
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "previewvec"
        assert doc["kind"] != "Secret", "Secrets are never rendered (secret.example.yaml)"


def test_k8s_hpa_component_replaces_keda(tmp_path: Path) -> None:
    docs = kustomize.build(hpa_overlay(tmp_path))
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("HorizontalPodAutoscaler", "worker") in kinds
    assert ("ScaledObject", "worker") not in kinds
    for doc in docs:
        validate(doc)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_commands_are_real_entry_points(overlay: str) -> None:
    skipped = []
    for where, container in our_containers(rendered(overlay)):
        assert "command" not in container, f"{where}: use args (keep tini as PID 1)"
        reason = check_command(container["args"], f"{overlay} {where}")
        if reason:
            skipped.append(reason)
    if overlay != "base":
        for _, container in our_containers(rendered(overlay)):
            assert container["image"] != IMAGE, "overlay must set the image with `images:`"
    if skipped:
        pytest.skip("; ".join(sorted(set(skipped))))


def by_name(docs: list[dict], kind: str, name: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def test_k8s_worker_deployment() -> None:
    from workers.app import QUEUES, TASK_TIME_LIMIT_S

    docs = rendered("overlays/prod")
    pod = by_name(docs, "Deployment", "worker")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > TASK_TIME_LIMIT_S + 30
    (worker,) = pod["containers"]
    assert worker["args"][:2] == ["previewvec", "worker"]
    # Started: this node answers a broadcast ping. Alive: the same, but a broker that
    # does not answer restarts nothing (infra/healthcheck.py; tests/ops/test_healthcheck.py).
    startup = " ".join(worker["startupProbe"]["exec"]["command"])
    assert "celery -A workers.app inspect ping" in startup and 'celery@$HOSTNAME' in startup
    assert worker["livenessProbe"]["exec"]["command"] == [
        "python", "/opt/previewvec/healthcheck.py", "worker"]
    assert worker["livenessProbe"]["timeoutSeconds"] >= 10
    limits, requests = worker["resources"]["limits"], worker["resources"]["requests"]
    # One CPU per pool child, at least two children per process (a whole main process
    # per core is over the 600 MB per core budget: docs/scale.md), and room for every
    # child at Celery's 1.5 GB recycling point.
    argv = worker["args"]
    children = int(argv[argv.index("--concurrency") + 1])
    assert children >= 2
    assert requests["cpu"] == limits["cpu"] == str(children)

    def mib(quantity: str) -> int:
        return int(quantity[:-2]) * (1024 if quantity.endswith("Gi") else 1)

    assert mib(limits["memory"]) >= children * 1536 and mib(requests["memory"]) >= 1024
    mounts = {m["mountPath"] for m in worker["volumeMounts"]}
    assert {"/tmp", "/app/.cache"} <= mounts
    (seed,) = pod["initContainers"]
    assert seed["args"][:2] == ["cp", "-a"]
    scaled = by_name(docs, "ScaledObject", "worker")["spec"]
    assert scaled["scaleTargetRef"]["name"] == "worker"
    assert sorted(t["metadata"]["listName"] for t in scaled["triggers"]) == sorted(QUEUES)
    assert scaled["maxReplicaCount"] >= 50
    pdb = by_name(docs, "PodDisruptionBudget", "worker")["spec"]
    assert pdb["selector"]["matchLabels"].items() <= by_name(
        docs, "Deployment", "worker")["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_pods_are_locked_down(overlay: str) -> None:
    for doc in rendered(overlay):
        pod = doc.get("spec", {}).get("template", {}).get("spec")
        if pod is None:
            continue
        assert pod["securityContext"]["runAsNonRoot"] is True, doc["metadata"]["name"]
        assert pod.get("automountServiceAccountToken") is False
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, c["name"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert "limits" in c["resources"] and "requests" in c["resources"]


def test_k8s_roles_and_overlays() -> None:
    dev, prod = rendered("overlays/dev"), rendered("overlays/prod")
    reducer = by_name(prod, "Deployment", "reducer")["spec"]
    assert reducer["replicas"] == 1 and reducer["strategy"]["type"] == "Recreate"
    assert by_name(prod, "Service", "api") and by_name(prod, "Service", "flower")
    flower = by_name(prod, "Deployment", "flower")["spec"]["template"]["spec"]
    assert {"secretRef": {"name": "previewvec-flower"}} in flower["containers"][0]["envFrom"]
    redis = by_name(dev, "StatefulSet", "redis")["spec"]
    assert "--appendonly" in redis["template"]["spec"]["containers"][0]["args"]
    assert redis["volumeClaimTemplates"]
    assert not [d for d in prod if d["kind"] == "StatefulSet"], "prod uses a managed Redis"
    assert by_name(dev, "ConfigMap", "previewvec-config")["data"][
        "PREVIEWVEC_BROKER_URL"].startswith("redis://redis.previewvec.svc:")
    prod_config = by_name(prod, "ConfigMap", "previewvec-config")["data"]
    assert prod_config["PREVIEWVEC_INDEX"].startswith("vectorize://")
    assert "PREVIEWVEC_BROKER_URL" not in prod_config, "prod broker URL is a Secret"
    assert by_name(prod, "Deployment", "api")["spec"]["replicas"] > by_name(
        dev, "Deployment", "api")["spec"]["replicas"]
    # dev: the API queries the reducer's embedded index, so both mount one volume at the
    # folder PREVIEWVEC_INDEX names, and the API runs on the reducer's node (RWO)
    index_dir = by_name(dev, "ConfigMap", "previewvec-config")["data"]["PREVIEWVEC_INDEX"]
    claims = {}
    for role in ("reducer", "api"):
        pod = by_name(dev, "Deployment", role)["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        (claims[role],) = [(volumes[m["name"]]["persistentVolumeClaim"]["claimName"],
                            m["mountPath"]) for m in pod["containers"][0]["volumeMounts"]
                           if "persistentVolumeClaim" in volumes[m["name"]]]
        assert index_dir.startswith(claims[role][1] + "/"), (role, claims[role])
    assert claims["api"] == claims["reducer"]
    assert by_name(dev, "PersistentVolumeClaim", claims["api"][0])
    api_pod = by_name(dev, "Deployment", "api")["spec"]["template"]["spec"]
    (term,) = api_pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "reducer"
    assert term["topologyKey"] == "kubernetes.io/hostname"
    policies = {d["metadata"]["name"]: d["spec"] for d in dev
                if d["kind"] == "NetworkPolicy"}
    assert policies["default-deny-ingress"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    assert policies["allow-redis-from-namespace"]["ingress"][0]["from"] == [{"podSelector": {}}]
    open_to_all = {name for name, spec in policies.items()
                   if any("from" not in rule for rule in spec.get("ingress", []))}
    assert open_to_all == {"allow-api", "allow-flower"}


@pytest.mark.parametrize("overlay", ["overlays/dev", "overlays/prod"])
def test_k8s_pinned_feature_version_is_what_its_settings_compute(overlay: str) -> None:
    # Else every worker refuses to start (contract/versions.py): a new layout version
    # or another analysis setting must update the pin in the same change.
    from contract.versions import check_claim

    config = by_name(rendered(overlay), "ConfigMap", "previewvec-config")["data"]
    settings = Settings.from_env({k: v for k, v in config.items() if k.startswith(ENV_PREFIX)})
    assert settings.feature_version, "the deployment pins its feature version"
    assert check_claim(settings) == settings.feature_version


def test_k8s_config_and_secret_templates() -> None:
    docs = rendered("overlays/prod")
    config = by_name(docs, "ConfigMap", "previewvec-config")["data"]
    fields = {ENV_PREFIX + f.upper() for f in Settings.__dataclass_fields__}
    for key in config:
        if key.startswith(ENV_PREFIX):
            assert key in fields, f"{key} is not a previewvec setting"
    Settings.from_env({k: v for k, v in config.items() if k.startswith(ENV_PREFIX)})
    templates = kustomize.load_docs(K8S / "base" / "secret.example.yaml")
    names = {t["metadata"]["name"] for t in templates}
    for t in templates:
        assert all(v == "" for v in t["stringData"].values()), "templates hold no values"
        for key in t["stringData"]:
            assert key not in config, f"{key} is secret but also in the ConfigMap"
    for path in K8S.rglob("kustomization.yaml"):
        spec = yaml.safe_load(path.read_text())
        listed = spec.get("resources", []) + [p["path"] for p in spec.get("patches", [])]
        assert not [r for r in listed if "secret" in r], f"{path} includes a Secret file"
    for _, c in our_containers(docs):
        for source in c.get("envFrom", []):
            if "secretRef" in source:
                assert source["secretRef"]["name"] in names


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_renderer_agrees_with_kubectl_kustomize(overlay: str) -> None:
    out = subprocess.run(["kubectl", "kustomize", str(K8S / overlay)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr

    def ident(doc: dict) -> tuple[str, str]:
        return doc["kind"], doc["metadata"]["name"]

    theirs = sorted((d for d in yaml.safe_load_all(out.stdout) if d), key=ident)
    ours = sorted(rendered(overlay), key=ident)
    assert json.dumps(ours, sort_keys=True) == json.dumps(theirs, sort_keys=True)


# ---------------------------------------------------------------- monitoring


def known_metrics() -> set[str]:
    flower_src = Path(importlib.util.find_spec("flower.events").origin).read_text()
    names = set(re.findall(r"'(flower_[a-z_]+)'", flower_src))
    names |= {"flower_task_runtime_seconds_bucket", "flower_task_runtime_seconds_sum",
              "flower_task_runtime_seconds_count", "flower_events_total"}
    exporter_src = (INFRA / "monitoring" / "runs_exporter.py").read_text()
    names |= set(re.findall(r'"(previewvec_[a-z_]+)"', exporter_src))
    # redis_exporter: key sizes from --check-single-keys, memory, up.
    names |= {"redis_key_size", "redis_up", "redis_memory_used_bytes", "redis_memory_max_bytes"}
    return names | {"up"}


def test_grafana_dashboard_and_datasource() -> None:
    grafana = INFRA / "monitoring" / "grafana"
    source = yaml.safe_load((grafana / "provisioning/datasources/prometheus.yml").read_text())
    (ds,) = source["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    dashboard = json.loads((grafana / "dashboards/previewvec.json").read_text())
    assert dashboard["uid"] and dashboard["panels"]
    exprs = []
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": ds["uid"]}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == ds["uid"]
            exprs.append(target["expr"])
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("queue", "workers online", "runtime", "error code", "per second"):
        assert topic in titles, topic
    unknown = set().union(*map(metric_names, exprs)) - known_metrics()
    assert not unknown, f"dashboard uses unknown metrics {unknown}"
    assert sorted(exprs) == sorted(dashboard_exprs())
    provider = yaml.safe_load((grafana / "provisioning/dashboards/previewvec.yml").read_text())
    mounts = compose()["services"]["grafana"]["volumes"]
    assert any(m.endswith(":" + provider["providers"][0]["options"]["path"] + ":ro")
               for m in mounts)


def test_dashboard_and_alerts_name_only_scraped_metrics() -> None:
    """What the last ./dev stack-test's Prometheus really scraped (it writes the list)."""
    names = scraped()
    assert names, "infra/monitoring/scraped-metrics.txt is missing: run ./dev stack-test"
    assert any(n.startswith("flower_") for n in names)
    assert any(n.startswith("previewvec_") for n in names)
    for where, exprs in (("dashboard", dashboard_exprs()), ("alerts", rule_exprs())):
        used = set().union(*map(metric_names, exprs)) - {"up"}
        assert used <= names, f"{where} names metrics never scraped: {sorted(used - names)}"


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool not installed (./dev stack-test runs it in a container)")
def test_promtool_checks_rules() -> None:
    out = subprocess.run(["promtool", "check", "rules", str(INFRA / "monitoring" / "alerts.yml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_prometheus_config_and_alerts() -> None:
    monitoring = INFRA / "monitoring"
    config = yaml.safe_load((monitoring / "prometheus.yml").read_text())
    services = compose()["services"]
    for job in config["scrape_configs"]:
        for target in job["static_configs"][0]["targets"]:
            assert target.split(":")[0] in services, target
    rules = yaml.safe_load((monitoring / "alerts.yml").read_text())["groups"][0]["rules"]
    runbook = (ROOT / "docs" / "operations.md").read_text().lower()
    names = {r["alert"] for r in rules}
    assert {"PreviewvecQueueBacklogGrowing", "PreviewvecNoWorkersOnline",
            "PreviewvecFailureRateHigh", "PreviewvecTaskRuntimeP95High"} <= names
    for rule in rules:
        unknown = metric_names(rule["expr"]) - known_metrics()
        assert not unknown, f"{rule['alert']}: unknown metrics {unknown}"
        anchor = rule["annotations"]["runbook"].split("#")[1]
        assert f"alert-{anchor.removeprefix('alert-')}" == anchor
        assert f"### alert: {anchor.removeprefix('alert-')}" in runbook, anchor


def test_runs_exporter_reports_failures_by_code() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from contract.state import Runs, connect
    from previewvec.localredis import LocalRedis

    spec = importlib.util.spec_from_file_location(
        "runs_exporter", INFRA / "monitoring" / "runs_exporter.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with LocalRedis() as server:
        runs = Runs.from_url(server.url)
        runs.create("r1", queue="batch")
        runs.mark_many_queued("r1", ["a", "b", "c"])
        runs.fail("r1", "a", "http_404", "not found")
        runs.fail("r1", "b", "undecodable", "bad bytes")
        runs.succeed("r1", "c", "done")
        connect(server.url).rpush("batch", "job")
        registry = CollectorRegistry()
        registry.register(module.RunsCollector(runs))
        text = generate_latest(registry).decode()
    assert 'previewvec_run_failures{code="http_404",run_id="r1"} 1.0' in text
    assert 'previewvec_run_recordings{run_id="r1",state="done"} 1.0' in text
    assert 'previewvec_run_recordings{run_id="r1",state="failed"} 2.0' in text
    assert 'previewvec_queue_length{queue="batch"} 1.0' in text


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_keda_watches_the_lists_and_redis_the_workers_use(overlay: str) -> None:
    """KEDA's triggers name the Redis lists kombu fills for the worker queues (priority 0:
    producers publish at the default priority; ./dev stack-test sees the jobs in them) on
    the Redis the workers connect to (address, database, TLS)."""
    from urllib.parse import urlsplit

    from contract.broker import QUEUES, queue_keys

    docs = rendered(overlay)
    config = by_name(docs, "ConfigMap", "previewvec-config")["data"]
    worker = by_name(docs, "Deployment", "worker")["spec"]["template"]["spec"]["containers"][0]
    worker_env = {e["name"] for e in worker.get("env", [])}
    config_refs = {s["configMapRef"]["name"] for s in worker["envFrom"] if "configMapRef" in s}
    scaled = by_name(docs, "ScaledObject", "worker")["spec"]
    assert {t["metadata"]["listName"] for t in scaled["triggers"]} == {
        queue_keys(q)[0] for q in QUEUES} == set(QUEUES)
    broker = config.get("PREVIEWVEC_BROKER_URL")  # prod: in Secret previewvec-broker
    for trigger in scaled["triggers"]:
        meta = trigger["metadata"]
        variable = meta["addressFromEnv"]
        # KEDA reads addressFromEnv from the scale target's container environment.
        assert variable in worker_env or (
            "previewvec-config" in config_refs and variable in config), variable
        tls = meta.get("enableTLS") == "true"
        assert tls == (config["REDIS_SCHEME"] == "rediss"), (overlay, trigger["name"])
        if broker:
            url = urlsplit(broker)
            assert config[variable] == f"{url.hostname}:{url.port or 6379}", overlay
            assert meta["databaseIndex"] == (url.path.strip("/") or "0"), overlay
            assert url.scheme == config["REDIS_SCHEME"], overlay
        else:  # base (no Redis chosen yet) and prod (the URL is a Secret)
            assert meta["databaseIndex"] == "0"
        if tls:
            assert trigger.get("authenticationRef"), "managed Redis needs its password"


KEDA_NAMESPACE = "keda"  # where KEDA's install (Helm chart, release manifests) puts it


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_keda_can_resolve_and_reach_an_in_cluster_redis(overlay: str) -> None:
    """KEDA's operator, not the worker, dials the address of a redis trigger: from its own
    namespace, so a short Service name ("redis") resolves to redis.keda, and ingress to the
    Redis pod must admit the KEDA namespace (default-deny-ingress blocks it otherwise)."""
    docs = rendered(overlay)
    config = by_name(docs, "ConfigMap", "previewvec-config")["data"]
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    scaled = by_name(docs, "ScaledObject", "worker")["spec"]
    for trigger in scaled["triggers"]:
        host, _, port = config[trigger["metadata"]["addressFromEnv"]].rpartition(":")
        name = host.split(".")[0]
        if name not in services:
            continue  # outside the cluster (prod: managed Redis), or no Redis (base)
        assert host in (f"{name}.previewvec.svc", f"{name}.previewvec.svc.cluster.local"), (
            f"{overlay}: KEDA resolves {host!r} in its own namespace")
        pod_labels = by_name(docs, "StatefulSet", name)["spec"]["template"]["metadata"][
            "labels"]
        admitted = False
        for policy in (d for d in docs if d["kind"] == "NetworkPolicy"):
            spec = policy["spec"]
            if not spec["podSelector"].get("matchLabels", {}).items() <= pod_labels.items():
                continue
            for rule in spec.get("ingress", []):
                ports = {p["port"] for p in rule.get("ports", [])}
                if ports and int(port) not in ports:
                    continue
                for peer in rule.get("from", []):
                    ns = peer.get("namespaceSelector", {}).get("matchLabels", {})
                    if ns.get("kubernetes.io/metadata.name") == KEDA_NAMESPACE:
                        admitted = True
        assert admitted, f"{overlay}: no NetworkPolicy lets KEDA reach {host}:{port}"


def service_link_variables(service: dict) -> set[str]:
    """What the kubelet puts into every pod's environment for a Service of its namespace
    (unless the pod says enableServiceLinks: false), Docker-links style."""
    name = service["metadata"]["name"].upper().replace("-", "_")
    out = {f"{name}_SERVICE_HOST", f"{name}_SERVICE_PORT", f"{name}_PORT"}
    for port in service["spec"]["ports"]:
        proto = port.get("protocol", "TCP")
        base = f"{name}_PORT_{port['port']}_{proto}"
        out |= {base, f"{base}_PROTO", f"{base}_PORT", f"{base}_ADDR"}
        if port.get("name"):
            out.add(f"{name}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}")
    return out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_flower_does_not_read_service_link_variables(overlay: str) -> None:
    """Flower applies every FLOWER_<option> variable (flower.command.apply_env_options):
    the Service `flower` makes the kubelet set FLOWER_PORT=tcp://10.x.y.z:5555, and
    int() of that stops Flower at start, every time."""
    from flower.command import is_flower_envvar

    docs = rendered(overlay)
    pod = by_name(docs, "Deployment", "flower")["spec"]["template"]["spec"]
    if pod.get("enableServiceLinks") is False:
        return
    injected = set().union(*(service_link_variables(d) for d in docs if d["kind"] == "Service"))
    clashing = sorted(v for v in injected if is_flower_envvar(v))
    assert not clashing, f"{overlay}: Flower would parse {clashing} as its options"


def test_compose_local_store_default_is_shared_and_needs_no_bucket(tmp_path: Path) -> None:
    """x-settings: an empty PREVIEWVEC_STORE in .env means the image's folder store. Then
    workers, reducer and api must share that folder (else the reducer never sees a
    record), and minio-init, which every previewvec service waits for, must succeed
    without a bucket to create (an empty bucket name failed it: nothing started)."""
    services = compose()["services"]
    default = re.fullmatch(r"\$\{PREVIEWVEC_STORE:-([^}]*)\}",
                           service_env(services["worker"])["PREVIEWVEC_STORE"]).group(1)
    assert default.startswith("/")  # a folder in the image
    shared = None
    for name in ("worker", "reducer", "api"):
        volumes = {v.split(":")[1]: v.split(":")[0] for v in services[name].get("volumes", [])}
        assert default in volumes, f"{name} does not mount the store folder {default}"
        assert shared in (None, volumes[default]), f"{name} mounts another store volume"
        shared = volumes[default]
    assert shared in compose()["volumes"]

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "mc.log"
    (bin_dir / "mc").write_text(  # MinIO refuses bucket names under 3 characters
        f'#!/bin/sh\necho "$@" >> {log}\n'
        'case "$1 $3" in "mb local/"|"mb local/?"|"mb local/??") exit 1;; esac\n')
    (bin_dir / "mc").chmod(0o755)
    script = services["minio-init"]["command"][0].replace("$$", "$")
    fake_boto3 = tmp_path / "py" / "boto3"
    fake_boto3.mkdir(parents=True)
    (fake_boto3 / "__init__.py").write_text(
        "def client(*a, **k):\n    raise SystemExit('no S3 call for a folder store')\n")
    offline = compose("docker-compose.offline.yml")["services"]["minio-init"]["command"][0]
    for store, expect_mb in (("", False), (default, False), ("s3://bkt/pre", True)):
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PREVIEWVEC_STORE": store,
               "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
        log.unlink(missing_ok=True)
        out = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True,
                             timeout=30)
        assert out.returncode == 0, (store, out.stdout, out.stderr)
        made = log.exists() and "mb --ignore-existing local/bkt" in log.read_text()
        assert made == expect_mb, store
        if not expect_mb:
            out = subprocess.run([sys.executable, "-c", offline], capture_output=True,
                                 text=True, timeout=30,
                                 env={**env, "PYTHONPATH": str(fake_boto3.parent)})
            assert out.returncode == 0, ("offline", store, out.stderr)
