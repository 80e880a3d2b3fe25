"""Deployment manifests: an entry per function on each platform, valid, true to the settings."""

import inspect
import shutil
import subprocess
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.knative_serving.serving.v1 import Service

from devtools.gateway import FUNCTIONS_DIR, TARGET, function_names, load_module
from devtools.manifests import (
    BROKER,
    BROKER_CLASS,
    BROKER_CLASSES,
    DEAD_LETTER_BROKER,
    FUNCTIONS,
    KNATIVE_DEFAULT_MAX_TIMEOUT_S,
    KNATIVE_DIR,
    PROBE_THREADS,
    RUNTIME_VARIABLES,
    SECRETS,
    STACK_FILE,
    STREAM_TIMEOUT_S,
    Function,
    knative_files,
    openfaas_stack,
    rendered_files,
    required_variables,
    secret_variables,
    setting_variables,
    stale_files,
)
from shared.settings import Settings

with warnings.catch_warnings():
    # The generated eventing models shadow a few pydantic attributes; harmless here.
    warnings.simplefilter("ignore")
    from cloudcoil.models.knative_eventing.eventing.v1 import Broker, Trigger
    from cloudcoil.models.knative_eventing.sources.v1 import SinkBinding

KNATIVE_MODELS = {
    ("serving.knative.dev/v1", "Service"): Service,
    ("eventing.knative.dev/v1", "Broker"): Broker,
    ("eventing.knative.dev/v1", "Trigger"): Trigger,
    ("sources.knative.dev/v1", "SinkBinding"): SinkBinding,
}
KUBERNETES_VERSION = "1.33.0"

# The table as it is, and without the history queue (no eventing resources are rendered then).
WITHOUT_QUEUE = {
    name: function
    for name, function in FUNCTIONS.items()
    if not (function.consumes or function.publishes_to)
}
TABLES = {"current": FUNCTIONS, "without a queue": WITHOUT_QUEUE}


def entry_hint(name: str) -> str:
    return (
        f"add an entry for {name!r} to FUNCTIONS in devtools/manifests.py, one of\n"
        f'    "{name}": Function(),  # Flask (flask_function): gunicorn threads, short requests\n'
        f'    "{name}": streaming(),  # ASGI (asgi_function): many long DeepSeek streams\n'
        f'    "{name}": Function(consumes=("<CloudEvent type>",)),  # queue-triggered\n'
        "then run `make manifests` and commit stack.yml and knative/"
    )


def stack() -> dict[str, Any]:
    return yaml.safe_load(STACK_FILE.read_text())


def knative_documents() -> Iterator[dict[str, Any]]:
    for path in sorted(KNATIVE_DIR.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            yield from yaml.safe_load_all(path.read_text())


def knative_services() -> dict[str, dict[str, Any]]:
    return {
        document["metadata"]["name"]: document
        for document in knative_documents()
        if document["kind"] == "Service"
    }


def container(service: dict[str, Any]) -> dict[str, Any]:
    (only,) = service["spec"]["template"]["spec"]["containers"]
    return only


def plain_env(service: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container(service)["env"] if "value" in item}


# Every function, on both platforms, and nothing else.


def test_every_function_has_a_deployment_entry() -> None:
    missing = sorted(set(function_names()) - set(FUNCTIONS))
    assert not missing, "\n".join(entry_hint(name) for name in missing)
    unknown = sorted(set(FUNCTIONS) - set(function_names()))
    assert not unknown, f"FUNCTIONS names functions that do not exist in functions/: {unknown}"


def test_the_written_manifests_are_what_the_table_renders() -> None:
    files = rendered_files()
    differing = [
        str(path.relative_to(STACK_FILE.parent))
        for path, text in files.items()
        if not path.exists() or path.read_text() != text
    ]
    stale = [str(path.relative_to(STACK_FILE.parent)) for path in stale_files(files)]
    assert not differing + stale, (
        f"out of date: {differing + stale}; run `make manifests` and commit the result"
    )


@pytest.mark.parametrize("name", function_names())
def test_openfaas_deploys_each_function_from_its_own_source(name: str) -> None:
    entry = stack()["functions"].get(name)
    assert entry is not None, entry_hint(name)
    environment = entry["environment"]
    assert environment["FUNCTION_TARGET"] == TARGET
    assert environment["FUNCTION_SOURCE"] == f"functions/{name}/main.py"
    assert (FUNCTIONS_DIR / name / "main.py").exists()
    assert entry["annotations"]["com.openfaas.health.http.path"] == "/healthz"
    assert entry["annotations"]["com.openfaas.ready.http.path"] == "/readyz"
    assert entry["labels"]["com.openfaas.scale.zero"] == "true"
    assert int(entry["labels"]["com.openfaas.scale.max"]) >= 1
    assert (
        entry["skip_build"] is True and entry["image"] == stack()["functions"]["projects"]["image"]
    )


@pytest.mark.parametrize("name", function_names())
def test_knative_serves_each_function_from_its_own_source(name: str) -> None:
    service = knative_services().get(name)
    assert service is not None, entry_hint(name)
    environment = plain_env(service)
    assert environment["FUNCTION_TARGET"] == TARGET
    assert environment["FUNCTION_SOURCE"] == f"functions/{name}/main.py"
    template = service["spec"]["template"]
    assert template["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"] == "0"
    assert int(template["metadata"]["annotations"]["autoscaling.knative.dev/max-scale"]) >= 1
    assert container(service)["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container(service)["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container(service)["resources"]["limits"]["memory"]


def test_no_manifest_names_a_function_that_does_not_exist() -> None:
    existing = set(function_names())
    assert set(stack()["functions"]) == existing
    assert set(knative_services()) == existing
    for document in knative_documents():
        spec = document.get("spec", {})
        references = [spec.get("subscriber", {}).get("ref", {}), spec.get("subject", {})]
        for reference in references:
            if reference.get("kind") == "Service":
                assert reference["name"] in existing, document


# Concurrency and timeouts follow how each function serves.


@pytest.mark.parametrize("name", function_names())
def test_concurrency_and_timeouts_fit_the_way_the_function_serves(name: str) -> None:
    spec = knative_services()[name]["spec"]["template"]["spec"]
    function = FUNCTIONS[name]
    if function.serves == "threads":
        # One request per gunicorn thread, and threads to spare for the probes; a default
        # cluster accepts the timeout.
        threads = int(plain_env(knative_services()[name])["THREADS"])
        assert spec["containerConcurrency"] == threads - PROBE_THREADS
        assert spec["timeoutSeconds"] <= KNATIVE_DEFAULT_MAX_TIMEOUT_S
    else:
        # One event loop holds many streams waiting on DeepSeek, minutes before a first token.
        assert spec["containerConcurrency"] >= 50
        assert spec["timeoutSeconds"] == spec["responseStartTimeoutSeconds"] == STREAM_TIMEOUT_S
        assert "THREADS" not in plain_env(knative_services()[name])
    assert spec["timeoutSeconds"] <= STREAM_TIMEOUT_S
    openfaas_target = stack()["functions"][name]["labels"]["com.openfaas.scale.target"]
    assert int(openfaas_target) == spec["containerConcurrency"]


@pytest.mark.parametrize("name", function_names())
def test_the_table_knows_how_each_function_serves(name: str) -> None:
    asgi = inspect.iscoroutinefunction(load_module(name).handle)
    expected = "async" if asgi else "threads"
    assert FUNCTIONS[name].serves == expected, (
        f"{name} is served by {'ASGI (uvicorn)' if asgi else 'Flask (gunicorn threads)'}: "
        f'set serves="{expected}" in its entry in devtools/manifests.py'
    )


# Valid against the Knative and Kubernetes schemas, for the table as it is and as it will be.


def unknown_fields(given: Any, understood: Any, where: str = "") -> list[str]:
    """Paths present in a manifest that the model dropped: fields the CRD does not define."""
    if isinstance(given, dict):
        if not isinstance(understood, dict):
            return [where]
        return [
            found
            for key, value in given.items()
            for found in (
                unknown_fields(value, understood[key], f"{where}.{key}")
                if key in understood
                else [f"{where}.{key}"]
            )
        ]
    if isinstance(given, list):
        return [
            found
            for index, (item, kept) in enumerate(zip(given, understood, strict=True))
            for found in unknown_fields(item, kept, f"{where}[{index}]")
        ]
    return []


def validate(document: dict[str, Any]) -> None:
    model = KNATIVE_MODELS.get((document["apiVersion"], document["kind"]))
    if model is None:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        return
    understood = model.model_validate(document).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    assert not unknown_fields(document, understood), (document["kind"], unknown_fields)


@pytest.mark.parametrize("table", TABLES.values(), ids=TABLES.keys())
def test_every_knative_document_validates(table: Mapping[str, Function]) -> None:
    files = knative_files(table)
    kustomization = files.pop("kustomization.yaml")[0]
    assert kustomization["resources"] == list(files)
    for documents in files.values():
        for document in documents:
            validate(document)


def test_a_queue_consumer_gets_a_trigger_with_retries_and_a_publisher_its_sink() -> None:
    eventing = knative_files(FUNCTIONS)["eventing.yaml"]
    triggers = {
        document["spec"]["subscriber"]["ref"]["name"]: document
        for document in eventing
        if document["kind"] == "Trigger" and document["spec"]["broker"] == BROKER
    }
    assert {name: t["spec"]["filter"]["attributes"]["type"] for name, t in triggers.items()} == {
        "history-writer": "com.better-assistant.turn.completed",
        "evaluation-worker": "com.better-assistant.evaluation.cell",
    }
    for trigger in triggers.values():
        delivery = trigger["spec"]["delivery"]
        assert delivery["retry"] >= 3 and delivery["backoffPolicy"] == "exponential"
        assert delivery["deadLetterSink"]["ref"]["kind"] == "Broker"
    bindings = [document for document in eventing if document["kind"] == "SinkBinding"]
    assert sorted(binding["spec"]["subject"]["name"] for binding in bindings) == [
        "chat",
        "dead-letters",
        "evaluation-worker",
        "evaluations",
    ]
    for consumer in ("history-writer", "evaluation-worker"):
        (service,) = knative_files(FUNCTIONS)[f"{consumer}.yaml"]
        assert service["metadata"]["labels"]["networking.knative.dev/visibility"] == "cluster-local"
    openfaas = openfaas_stack(FUNCTIONS)["functions"]
    assert openfaas["chat"]["environment"]["HISTORY_QUEUE"] == "openfaas"
    assert openfaas["chat"]["environment"]["HISTORY_QUEUE_URL"].startswith("http://gateway.")
    for publisher in ("evaluations", "evaluation-worker"):
        assert openfaas[publisher]["environment"]["EVALUATION_QUEUE"] == "openfaas"
    assert openfaas["history-writer"]["annotations"]["com.openfaas.retry.attempts"] == "5"
    assert openfaas["evaluation-worker"]["annotations"]["com.openfaas.retry.attempts"] == "5"


def test_the_dead_letter_broker_delivers_every_event_to_the_dead_letters_function() -> None:
    """What a Trigger gives up on is not dropped: one Trigger on the dead-letter Broker, with no
    filter, subscribes the function that keeps dead letters; it retries, and has no dead-letter
    sink of its own (nothing lies beyond it)."""
    eventing = knative_files(FUNCTIONS)["eventing.yaml"]
    triggers = [document for document in eventing if document["kind"] == "Trigger"]
    for trigger in triggers:
        if trigger["spec"]["broker"] == BROKER:
            sink = trigger["spec"]["delivery"]["deadLetterSink"]["ref"]
            assert sink["name"] == DEAD_LETTER_BROKER
    (dead,) = [t for t in triggers if t["spec"]["broker"] == DEAD_LETTER_BROKER]
    assert dead["spec"]["subscriber"]["ref"] == {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "name": "dead-letters",
    }
    assert "filter" not in dead["spec"]
    assert dead["spec"]["delivery"]["retry"] >= 3
    assert "deadLetterSink" not in dead["spec"]["delivery"]
    # It verifies the events' signatures and serves operators, from outside the cluster.
    (service,) = knative_files(FUNCTIONS)["dead-letters.yaml"]
    assert "networking.knative.dev/visibility" not in service["metadata"]["labels"]
    secrets = stack()["functions"]["dead-letters"]["secrets"]
    assert {"event-signing-key", "admin-api-key", "mongodb-uri"} <= set(secrets)


@pytest.mark.parametrize("broker_class", BROKER_CLASSES)
def test_the_broker_class_is_a_setting(broker_class: str) -> None:
    """Both Brokers get the class the generator is set to, and the ConfigMap that class reads;
    the written manifests use the default."""
    brokers = [
        document
        for document in knative_files(FUNCTIONS, broker_class)["eventing.yaml"]
        if document["kind"] == "Broker"
    ]
    assert sorted(broker["metadata"]["name"] for broker in brokers) == sorted(
        [BROKER, DEAD_LETTER_BROKER]
    )
    for broker in brokers:
        validate(broker)
        annotations = broker["metadata"]["annotations"]
        assert annotations["eventing.knative.dev/broker.class"] == broker_class
        assert broker["spec"]["config"]["name"] == BROKER_CLASSES[broker_class]
    written = [d for d in knative_documents() if d["kind"] == "Broker"]
    assert {d["metadata"]["annotations"]["eventing.knative.dev/broker.class"] for d in written} == {
        BROKER_CLASS
    }


def test_eventing_waits_for_a_queue_triggered_function() -> None:
    assert "eventing.yaml" not in knative_files(WITHOUT_QUEUE)
    assert (KNATIVE_DIR / "eventing.yaml").exists() == any(f.consumes for f in FUNCTIONS.values())


def kustomized(directory: Path) -> list[dict]:
    """The documents `kubectl kustomize` builds from the directory."""
    built = subprocess.run(
        ["kubectl", "kustomize", str(directory)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return list(yaml.safe_load_all(built))


@pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (with kustomize) not installed"
)
def test_kubectl_builds_the_kustomization(tmp_path: Path) -> None:
    shutil.copytree(KNATIVE_DIR, tmp_path / "knative")
    shutil.copy(KNATIVE_DIR / "secrets.env.example", tmp_path / "knative" / "secrets.env")
    documents = kustomized(tmp_path / "knative")
    for document in documents:
        validate(document)
    kinds = sorted(document["kind"] for document in documents)
    assert kinds.count("Service") == len(function_names())
    assert {"Namespace", "ConfigMap", "Secret"} <= set(kinds)
    assert {document["metadata"].get("namespace") for document in documents} - {None} == {
        "better-assistant"
    }


def built_secret_references(directory: Path) -> tuple[str, dict[str, set[str]]]:
    """`kubectl kustomize` of the directory: the Secret's name, and the Secret names each
    Knative Service's template refers to."""
    documents = kustomized(directory)
    (secret,) = [d["metadata"]["name"] for d in documents if d["kind"] == "Secret"]
    references = {
        document["metadata"]["name"]: {
            variable["valueFrom"]["secretKeyRef"]["name"]
            for variable in container(document)["env"]
            if "secretKeyRef" in variable.get("valueFrom", {})
        }
        for document in documents
        if document["kind"] == "Service"
    }
    return secret, references


@pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (with kustomize) not installed"
)
def test_a_changed_secret_rolls_out_new_revisions(tmp_path: Path) -> None:
    """The generated Secret's name carries a hash of its values, and every Service names it by
    that name: changing a secret changes each Service's template, so Knative makes revisions."""
    directory = tmp_path / "knative"
    shutil.copytree(KNATIVE_DIR, directory)
    example = (KNATIVE_DIR / "secrets.env.example").read_text()
    (directory / "secrets.env").write_text(example)
    secret, references = built_secret_references(directory)
    assert secret.startswith(f"{SECRETS}-") and secret != SECRETS
    assert set(references) == set(function_names())
    assert all(names == {secret} for names in references.values()), references
    (directory / "secrets.env").write_text(example.replace("CHANGE-ME", "rotated", 1))
    rotated, rotated_references = built_secret_references(directory)
    assert rotated not in (secret, SECRETS)
    assert all(names == {rotated} for names in rotated_references.values())


# Every variable a manifest sets is one the settings (or the runtime) read.


def variables_set_by_manifests() -> dict[str, set[str]]:
    """Function name -> environment variables its deployments set, on either platform."""
    settings_keys = {
        key
        for document in knative_documents()
        if document["kind"] == "ConfigMap"
        for key in document["data"]
    }
    secrets_file = (KNATIVE_DIR / "secrets.env.example").read_text().splitlines()
    secret_keys = {line.split("=")[0] for line in secrets_file if "=" in line}
    variables: dict[str, set[str]] = {}
    for name, service in knative_services().items():
        names = {item["name"] for item in container(service)["env"]}
        variables[name] = names | settings_keys
        for reference in container(service)["env"]:
            key = reference.get("valueFrom", {}).get("secretKeyRef", {}).get("key")
            assert key is None or key in secret_keys, f"{name}: the Secret has no {key}"
    for name, entry in stack()["functions"].items():
        from_files = {secret_variables()[secret] for secret in entry["secrets"]}
        variables[name] = variables.get(name, set()) | set(entry["environment"]) | from_files
    variables["(knative Secret)"] = secret_keys
    return variables


def test_every_variable_a_manifest_sets_is_read() -> None:
    readable = setting_variables() | RUNTIME_VARIABLES
    for name, variables in variables_set_by_manifests().items():
        assert variables <= readable, f"{name}: nothing reads {sorted(variables - readable)}"


def test_every_secret_a_manifest_mounts_is_a_file_the_settings_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {secret for entry in stack()["functions"].values() for secret in entry["secrets"]}
    assert secrets <= set(secret_variables()), "add the secret's name as a settings alias"
    for secret, variable in secret_variables().items():
        monkeypatch.delenv(variable, raising=False)  # the environment would win over the file
        (tmp_path / secret).write_text(f"value-of-{secret}")
    settings = Settings(_secrets_dir=tmp_path)
    for name, info in Settings.model_fields.items():
        secret = next(
            (s for s in secrets if s in getattr(info.validation_alias, "choices", [])), None
        )
        if secret is not None:
            value = getattr(settings, name)
            # A setting that takes several comma-separated values (rotated keys) reads a list.
            values = value if isinstance(value, list) else [value]
            plain = [v.get_secret_value() if hasattr(v, "get_secret_value") else v for v in values]
            assert plain == [f"value-of-{secret}"], secret


def test_every_required_setting_is_set() -> None:
    for name, variables in variables_set_by_manifests().items():
        if not name.startswith("("):
            assert required_variables() <= variables, name


def test_the_runtime_variables_are_read_by_functions_framework() -> None:
    import functions_framework

    source = "".join(
        path.read_text() for path in Path(functions_framework.__file__).parent.rglob("*.py")
    )
    for variable in RUNTIME_VARIABLES:
        assert f'"{variable}"' in source, variable


def test_a_publisher_gets_its_sink_where_the_settings_read_it() -> None:
    for document in knative_documents():
        if document["kind"] == "SinkBinding":
            assert "K_SINK" in setting_variables(), "SinkBinding sets K_SINK: add it to Settings"


def test_deployed_functions_name_their_browser_origins_never_any() -> None:
    settings = yaml.safe_load((KNATIVE_DIR / "settings.yaml").read_text())["data"]
    origins = {entry["environment"]["CORS_ORIGINS"] for entry in stack()["functions"].values()}
    assert origins == {settings["CORS_ORIGINS"]}
    assert "*" not in settings["CORS_ORIGINS"]


def test_functions_that_serve_callers_get_the_admin_key_and_the_identity_provider() -> None:
    """The queue-triggered ones authenticate events, not callers, so they get no admin key."""
    settings = yaml.safe_load((KNATIVE_DIR / "settings.yaml").read_text())["data"]
    assert settings["OIDC_ISSUER"].startswith("https://") and settings["OIDC_AUDIENCE"]
    functions = stack()["functions"]
    for name, entry in functions.items():
        serves_callers = not FUNCTIONS[name].queue_triggered
        assert ("admin-api-key" in entry["secrets"]) == serves_callers, name
        assert entry["environment"]["OIDC_ISSUER"] == settings["OIDC_ISSUER"], name
        (service,) = knative_files(FUNCTIONS)[f"{name}.yaml"]
        variables = {
            variable["name"]
            for variable in service["spec"]["template"]["spec"]["containers"][0].get("env", [])
        }
        assert ("ADMIN_API_KEY" in variables) == serves_callers, name
