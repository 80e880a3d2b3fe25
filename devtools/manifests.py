"""Deployment manifests for every function, rendered from the one table below (`FUNCTIONS`).

`make manifests` writes `stack.yml` (OpenFaaS) and `knative/` (Knative Serving and Eventing, applied
with `kubectl apply -k knative/`); `make openapi` writes `openapi.json`. Both are committed, and
tests/test_manifests.py fails when a function in `functions/` has no entry here, an entry names no
function, or a written file differs from what this module renders.

Three kinds of function, by how they are served:
- threaded (the default): Flask under gunicorn's gthread worker; one instance serves `threads`
  requests at once, so that is its container concurrency (it has two more threads, for the
  probes); requests are short.
- asynchronous (`serves="async"`): ASGI (`functions_framework.aio`) under a uvicorn worker; one
  event loop holds many streams that mostly wait on DeepSeek, so concurrency is high and requests
  may last as long as `STREAM_TIMEOUT_S`.
- queue-triggered (`consumes=(event types)`): reached only by the platform's queue — a Knative
  Trigger from the Broker, or OpenFaaS's `/async-function/<name>` — never from outside the cluster.
A function that emits events for queue-triggered ones names them in `publishes_to`: on Knative a
SinkBinding gives it the Broker's URL in `K_SINK`; on OpenFaaS it posts to the gateway's
`/async-function/<consumer>`, told so by the settings in `OPENFAAS_PUBLISHING[consumer]`.
An event a Trigger gave up on goes to the dead-letter Broker, whose one Trigger delivers it to
the function marked `dead_letter_sink` (which keeps it for operators).

`BROKER_CLASS` picks the Brokers' implementation. The Secret is generated with kustomize's name
hash, which kustomize writes into every Service that names it: a changed secret rolls out new
revisions.
"""

import argparse
import json
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
STACK_FILE = ROOT / "stack.yml"
KNATIVE_DIR = ROOT / "knative"
OPENAPI_FILE = ROOT / "openapi.json"
TARGET = "handle"
IMAGE = "better-assistant"
NAMESPACE = "better-assistant"
SETTINGS_CONFIGMAP = "better-assistant-settings"
SECRETS = "better-assistant-secrets"
BROKER = "better-assistant"
DEAD_LETTER_BROKER = "better-assistant-dead-letters"
# Each Broker class and the ConfigMap (in knative-eventing) its Knative installation configures
# it with. The channel-based broker is Knative's default and keeps events only as long as the
# channel it runs on does (the in-memory channel: until a pod restarts); production wants Kafka,
# installed with its broker (`kafka-broker-config` names the topics' partitions and replicas).
BROKER_CLASSES: dict[str, str] = {
    "MTChannelBasedBroker": "config-br-default-channel",
    "Kafka": "kafka-broker-config",
}
BROKER_CLASS = "MTChannelBasedBroker"
OPENFAAS_GATEWAY = "http://gateway.openfaas:8080"
# What a publisher needs on OpenFaaS to reach each queue-triggered function (on Knative, K_SINK).
OPENFAAS_PUBLISHING: dict[str, dict[str, str]] = {
    "history-writer": {"HISTORY_QUEUE": "openfaas", "HISTORY_QUEUE_URL": OPENFAAS_GATEWAY},
    "evaluation-worker": {
        "EVALUATION_QUEUE": "openfaas",
        "EVALUATION_QUEUE_URL": OPENFAAS_GATEWAY,
    },
}
# Knative refuses a revision whose timeoutSeconds exceeds the cluster's max-revision-timeout-seconds
# (600 by default): the README's deploy steps raise it to this, for the streaming functions.
STREAM_TIMEOUT_S = 1800
KNATIVE_DEFAULT_MAX_TIMEOUT_S = 600

# Non-secret settings every function gets (a ConfigMap on Knative, `environment` on OpenFaaS).
SETTINGS: dict[str, str] = {
    "MONGODB_DB": "better_assistant",
    "MONGODB_TIMEOUT_MS": "3000",
    "LOG_LEVEL": "INFO",
    # The frontend's origin: set it here and run `make manifests` (never `*` when deployed).
    "CORS_ORIGINS": "https://app.example.com",
    # The team's OpenID Connect provider, whose access tokens the frontend sends; the JWKS is
    # discovered from the issuer (set OIDC_JWKS_URL to name it instead).
    "OIDC_ISSUER": "https://login.example.com/",
    "OIDC_AUDIENCE": "better-assistant",
}

# Read by functions-framework's CLI and its gunicorn configuration rather than by our settings.
RUNTIME_VARIABLES = frozenset(
    {"FUNCTION_TARGET", "FUNCTION_SOURCE", "FUNCTION_SIGNATURE_TYPE", "PORT", "HOST", "THREADS"}
)


# gunicorn threads a threaded function has beyond its container concurrency: liveness and readiness.
PROBE_THREADS = 2


@dataclass(frozen=True)
class Function:
    """How one function is deployed; the defaults fit a threaded (Flask) function."""

    serves: Literal["threads", "async"] = "threads"
    threads: int = 8
    # In-flight requests per instance; a threaded function serves as many as it has threads.
    concurrency: int | None = None
    timeout_s: int = 60
    max_scale: int = 10
    cpu: str = "250m"
    memory: str = "256Mi"
    memory_limit: str = "512Mi"
    # OpenFaaS secret names (files in /var/openfaas/secrets); Knative gets the same values from
    # the Secret, under the environment variable the settings read for each.
    secrets: tuple[str, ...] = ("mongodb-uri",)
    consumes: tuple[str, ...] = ()
    publishes_to: tuple[str, ...] = ()
    # It takes every event the dead-letter Broker receives (and, unlike a queue-triggered
    # function, serves operators too).
    dead_letter_sink: bool = False
    retries: int = 5

    @property
    def container_concurrency(self) -> int:
        return self.concurrency or self.threads

    @property
    def queue_triggered(self) -> bool:
        return bool(self.consumes)

    @property
    def all_secrets(self) -> tuple[str, ...]:
        """Its secrets; the operators' admin key when it serves callers; the key that signs
        queue events when it publishes or takes any."""
        secrets = [*self.secrets]
        if not self.queue_triggered:
            secrets.append("admin-api-key")
        if self.consumes or self.publishes_to or self.dead_letter_sink:
            secrets.append("event-signing-key")
        return tuple(secrets)


def streaming(**changes: Any) -> Function:
    """An ASGI function that streams DeepSeek's answers."""
    defaults: dict[str, Any] = {
        "serves": "async",
        "concurrency": 100,
        "timeout_s": STREAM_TIMEOUT_S,
        "max_scale": 20,
        "memory": "384Mi",
        "memory_limit": "768Mi",
        "secrets": ("mongodb-uri", "deepseek-api-key"),
    }
    return Function(**defaults | changes)


# One entry per folder of functions/.
FUNCTIONS: dict[str, Function] = {
    "chat": streaming(publishes_to=("history-writer",)),
    "datasets": Function(),
    # Keeps what the Triggers gave up on; a replayed cell runs here and hands out the next ones.
    "dead-letters": streaming(
        concurrency=50,
        max_scale=2,
        dead_letter_sink=True,
        publishes_to=("evaluation-worker",),
    ),
    "dialogs": Function(),
    # Starting a run stores it and queues its first cells; when the queue refuses them, the
    # request runs them itself (so it may last as long as a DeepSeek answer).
    "evaluations": streaming(concurrency=50, max_scale=5, publishes_to=("evaluation-worker",)),
    # One cell per delivery, mostly waiting on DeepSeek; each finished cell queues the next.
    "evaluation-worker": streaming(
        concurrency=50,
        consumes=("com.better-assistant.evaluation.cell",),
        publishes_to=("evaluation-worker",),
    ),
    "executions": streaming(),
    "history-writer": Function(consumes=("com.better-assistant.turn.completed",)),
    # Apps' OpenAI SDKs: streamed answers, like chat's.
    "openai": streaming(),
    "projects": Function(),
    "prompts": Function(),
}


# Settings, introspected: environment variables and secret files that `Settings` reads.

_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
_SECRET_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def _aliases(settings: type[Settings] = Settings) -> Iterable[tuple[str, list[str]]]:
    for name, info in settings.model_fields.items():
        alias = info.validation_alias
        choices = getattr(alias, "choices", None) or ([alias] if alias else [name.upper()])
        yield name, [choice for choice in choices if isinstance(choice, str)]


def setting_variables() -> set[str]:
    """Every environment variable the settings read."""
    return {alias for _, aliases in _aliases() for alias in aliases if _ENV_NAME.match(alias)}


def secret_variables() -> dict[str, str]:
    """OpenFaaS secret file name -> the environment variable of the same setting."""
    secrets = {}
    for _, aliases in _aliases():
        variables = [alias for alias in aliases if _ENV_NAME.match(alias)]
        for alias in aliases:
            if _SECRET_NAME.match(alias) and not _ENV_NAME.match(alias) and variables:
                secrets[alias] = variables[0]
    return secrets


def required_variables() -> set[str]:
    """One environment variable per setting that has no default."""
    return {
        next(alias for alias in aliases if _ENV_NAME.match(alias))
        for name, aliases in _aliases()
        if Settings.model_fields[name].is_required()
    }


# Rendering.


def function_environment(name: str, function: Function) -> dict[str, str]:
    """The variables a deployment sets for the function itself (not settings, not secrets)."""
    environment = {"FUNCTION_TARGET": TARGET, "FUNCTION_SOURCE": f"functions/{name}/main.py"}
    if function.serves == "threads":
        # functions-framework's default is 4 per CPU the node has, not per CPU the pod may use.
        # Past the requests the platform may send at once, threads kept for the probes: liveness
        # must not queue behind requests that wait on a database.
        environment["THREADS"] = str(function.threads + PROBE_THREADS)
    return environment


def _check_table(functions: Mapping[str, Function]) -> None:
    sinks = [name for name, function in functions.items() if function.dead_letter_sink]
    if len(sinks) > 1:
        raise ValueError(f"one dead-letter sink, not {sinks}")
    for name, function in functions.items():
        for target in function.publishes_to:
            if not (target in functions and functions[target].consumes):
                raise ValueError(f"{name} publishes to {target}: no queue-triggered function")
            if target not in OPENFAAS_PUBLISHING:
                raise ValueError(f"say in OPENFAAS_PUBLISHING how to publish to {target}")


def _labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "better-assistant"}


def openfaas_stack(functions: Mapping[str, Function]) -> dict[str, Any]:
    """stack.yml: every function from the same image, picked by FUNCTION_SOURCE."""
    _check_table(functions)
    entries = {}
    for name, function in functions.items():
        environment = function_environment(name, function) | SETTINGS
        for target in function.publishes_to:
            environment |= OPENFAAS_PUBLISHING[target]
        annotations = {
            "com.openfaas.health.http.path": "/healthz",
            "com.openfaas.ready.http.path": "/readyz",
        }
        if function.queue_triggered:
            # OpenFaaS Pro's queue-worker; the Community Edition tries each message once.
            annotations |= {
                "com.openfaas.retry.attempts": str(function.retries),
                "com.openfaas.retry.codes": "408,429,500,502,503,504",
                "com.openfaas.retry.min_wait": "1s",
                "com.openfaas.retry.max_wait": "1m",
            }
        entries[name] = {
            "lang": "dockerfile",
            "handler": ".",
            "image": f"${{IMAGE:-{IMAGE}:latest}}",
            "skip_build": True,
            "environment": environment,
            "secrets": list(function.all_secrets),
            "labels": {
                **_labels(name),
                "com.openfaas.scale.min": "1",
                "com.openfaas.scale.max": str(function.max_scale),
                "com.openfaas.scale.zero": "true",
                "com.openfaas.scale.zero-duration": "10m",
                "com.openfaas.scale.type": "capacity",
                "com.openfaas.scale.target": str(function.container_concurrency),
            },
            "annotations": annotations,
            "requests": {"cpu": function.cpu, "memory": function.memory},
            "limits": {"memory": function.memory_limit},
        }
    return {
        "version": 1.0,
        "provider": {"name": "openfaas", "gateway": "${OPENFAAS_URL:-http://127.0.0.1:8080}"},
        "functions": entries,
    }


def knative_service(name: str, function: Function) -> dict[str, Any]:
    secret_env = {secret: variable for secret, variable in secret_variables().items()}
    env: list[dict[str, Any]] = [
        {"name": key, "value": value} for key, value in function_environment(name, function).items()
    ]
    env += [
        {
            "name": secret_env[secret],
            "valueFrom": {"secretKeyRef": {"name": SECRETS, "key": secret_env[secret]}},
        }
        for secret in function.all_secrets
    ]
    metadata: dict[str, Any] = {"name": name, "labels": _labels(name)}
    if function.queue_triggered:
        metadata["labels"] = {
            **metadata["labels"],
            "networking.knative.dev/visibility": "cluster-local",
        }
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "template": {
                "metadata": {
                    "labels": _labels(name),
                    "annotations": {
                        "autoscaling.knative.dev/min-scale": "0",
                        "autoscaling.knative.dev/max-scale": str(function.max_scale),
                    },
                },
                "spec": {
                    "containerConcurrency": function.container_concurrency,
                    "timeoutSeconds": function.timeout_s,
                    # A non-streamed answer starts only when DeepSeek has finished.
                    "responseStartTimeoutSeconds": function.timeout_s,
                    "containers": [
                        {
                            "name": "function",
                            "image": IMAGE,
                            "ports": [{"name": "http1", "containerPort": 8080}],
                            "env": env,
                            "envFrom": [{"configMapRef": {"name": SETTINGS_CONFIGMAP}}],
                            "readinessProbe": {
                                "httpGet": {"path": "/readyz"},
                                "timeoutSeconds": 5,
                                "failureThreshold": 3,
                            },
                            "livenessProbe": {
                                "httpGet": {"path": "/healthz"},
                                "periodSeconds": 10,
                                "timeoutSeconds": 2,
                                "failureThreshold": 3,
                            },
                            "resources": {
                                "requests": {"cpu": function.cpu, "memory": function.memory},
                                "limits": {"memory": function.memory_limit},
                            },
                            "securityContext": {
                                "runAsNonRoot": True,
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                                "seccompProfile": {"type": "RuntimeDefault"},
                            },
                        }
                    ],
                },
            }
        },
    }


def _ref(api_version: str, kind: str, name: str) -> dict[str, Any]:
    return {"ref": {"apiVersion": api_version, "kind": kind, "name": name}}


def knative_broker(name: str, broker_class: str) -> dict[str, Any]:
    return {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Broker",
        "metadata": {
            "name": name,
            "annotations": {"eventing.knative.dev/broker.class": broker_class},
        },
        "spec": {
            "config": {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": BROKER_CLASSES[broker_class],
                "namespace": "knative-eventing",
            }
        },
    }


def knative_eventing(
    functions: Mapping[str, Function], broker_class: str = BROKER_CLASS
) -> list[dict[str, Any]]:
    """The Brokers, a Trigger per consumed event type and one from the dead-letter Broker to its
    sink, a SinkBinding per publisher."""
    broker = "eventing.knative.dev/v1"
    documents: list[dict[str, Any]] = [
        knative_broker(name, broker_class) for name in (BROKER, DEAD_LETTER_BROKER)
    ]
    for name, function in functions.items():
        for event_type in function.consumes:
            documents.append(
                {
                    "apiVersion": broker,
                    "kind": "Trigger",
                    "metadata": {"name": f"{name}-{re.sub(r'[^a-z0-9]+', '-', event_type)}"},
                    "spec": {
                        "broker": BROKER,
                        "filter": {"attributes": {"type": event_type}},
                        "subscriber": _ref("serving.knative.dev/v1", "Service", name),
                        "delivery": {
                            "retry": function.retries,
                            "backoffPolicy": "exponential",
                            "backoffDelay": "PT1S",
                            "deadLetterSink": _ref(broker, "Broker", DEAD_LETTER_BROKER),
                        },
                    },
                }
            )
    for name, function in functions.items():
        if function.dead_letter_sink:
            # Every event, whatever its type; nothing lies beyond it, so no dead-letter sink.
            documents.append(
                {
                    "apiVersion": broker,
                    "kind": "Trigger",
                    "metadata": {"name": f"{name}-all"},
                    "spec": {
                        "broker": DEAD_LETTER_BROKER,
                        "subscriber": _ref("serving.knative.dev/v1", "Service", name),
                        "delivery": {
                            "retry": function.retries,
                            "backoffPolicy": "exponential",
                            "backoffDelay": "PT1S",
                        },
                    },
                }
            )
    for name, function in functions.items():
        if function.publishes_to:
            documents.append(
                {
                    "apiVersion": "sources.knative.dev/v1",
                    "kind": "SinkBinding",
                    "metadata": {"name": f"{name}-events"},
                    "spec": {
                        "subject": {
                            "apiVersion": "serving.knative.dev/v1",
                            "kind": "Service",
                            "name": name,
                        },
                        "sink": _ref(broker, "Broker", BROKER),
                    },
                }
            )
    return documents


def knative_files(
    functions: Mapping[str, Function], broker_class: str = BROKER_CLASS
) -> dict[str, list[dict[str, Any]]]:
    """knative/<file> -> its documents; the kustomization lists them all."""
    _check_table(functions)
    files: dict[str, list[dict[str, Any]]] = {
        "namespace.yaml": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        ],
        "settings.yaml": [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": SETTINGS_CONFIGMAP},
                "data": SETTINGS,
            }
        ],
    }
    for name, function in functions.items():
        files[f"{name}.yaml"] = [knative_service(name, function)]
    if any(function.consumes for function in functions.values()):
        files["eventing.yaml"] = knative_eventing(functions, broker_class)
    files["kustomization.yaml"] = [
        {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "namespace": NAMESPACE,
            "resources": list(files),
            # knative/secrets.env (not committed) holds the values: see secrets.env.example.
            # The Secret's name gets a hash of them, and kustomize (v4 on, kubectl 1.21 on)
            # renames the references in any kind's pod template, Knative Services' too: a
            # changed secret changes every Service's template, so each rolls out a revision.
            "secretGenerator": [{"name": SECRETS, "envs": ["secrets.env"]}],
        }
    ]
    return files


def secret_variables_used(functions: Mapping[str, Function]) -> list[str]:
    secrets = secret_variables()
    return sorted(
        {secrets[name] for function in functions.values() for name in function.all_secrets}
    )


_SECRET_EXAMPLES = {
    "MONGODB_URI": "mongodb://better-assistant:CHANGE-ME@mongo-1,mongo-2,mongo-3/?replicaSet=rs0",
    "EVENT_SIGNING_KEY": "CHANGE-ME-to-a-long-random-secret",
    "ADMIN_API_KEY": "CHANGE-ME-to-a-long-random-secret",
}


def _dump(documents: list[dict[str, Any]]) -> str:
    return "---\n".join(
        yaml.safe_dump(document, sort_keys=False, width=100) for document in documents
    )


_HEADER = "# Generated by `make manifests` from devtools/manifests.py: edit the table there.\n"
# True of OpenFaaS as it is: said where an operator reads the stack.
_OPENFAAS_NOTE = (
    "# Dead letters: OpenFaaS has no dead-letter queue. The queue-worker retries an event\n"
    "# (com.openfaas.retry.*, OpenFaaS Pro), then drops it; an X-Callback-Url would receive\n"
    "# the function's answer, not the event, so no dropped event reaches the dead-letters\n"
    "# function here. It serves the operators' routes, and events posted to it by hand.\n"
)


def rendered_files(functions: Mapping[str, Function] | None = None) -> dict[Path, str]:
    """Every generated manifest file and its text."""
    functions = FUNCTIONS if functions is None else functions
    files = {STACK_FILE: _HEADER + _OPENFAAS_NOTE + _dump([openfaas_stack(functions)])}
    for name, documents in knative_files(functions).items():
        files[KNATIVE_DIR / name] = _HEADER + _dump(documents)
    example = "".join(
        f"{variable}={_SECRET_EXAMPLES.get(variable, 'CHANGE-ME')}\n"
        for variable in secret_variables_used(functions)
    )
    files[KNATIVE_DIR / "secrets.env.example"] = (
        "# Copy to knative/secrets.env (never committed) and fill in; kustomize makes the Secret.\n"
        + example
    )
    return files


def write_manifests() -> list[Path]:
    """Write every generated file, and remove generated ones no longer rendered."""
    files = rendered_files()
    for path in stale_files(files):
        path.unlink()
    for path, text in files.items():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    return list(files)


def stale_files(files: Mapping[Path, str]) -> list[Path]:
    """Generated files in knative/ that the table no longer renders."""
    return [
        path
        for path in KNATIVE_DIR.glob("*.y*ml")
        if path not in files and path.read_text().startswith(_HEADER)
    ]


def write_openapi() -> Path:
    from devtools.gateway import api_document

    OPENAPI_FILE.write_text(json.dumps(api_document(), indent=2) + "\n")
    return OPENAPI_FILE


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["manifests", "openapi"])
    arguments = parser.parse_args(argv)
    written = write_manifests() if arguments.what == "manifests" else [write_openapi()]
    for path in written:
        print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
