"""The `prompts` function: versioned prompts with labels, diffs and cacheable run-time fetches."""

from shared.http.flask_adapter import flask_function
from shared.http.messages import Request, Response, json_response
from shared.http.routing import Router
from shared.pagination import Page
from shared.projects.service import ProjectService
from shared.prompts.models import (
    DiffParams,
    LabelMove,
    Prompt,
    PromptCreate,
    PromptDiff,
    PromptListParams,
    PromptRecord,
    PromptUpdate,
    PromptUpdated,
    PromptVersion,
    VersionListParams,
    VersionPage,
    VersionSelector,
)
from shared.prompts.service import PromptService
from shared.workflows.deletion.prompts import delete_with_gates_and_runs
from shared.workflows.gates.models import Gate, GateList, GateSet
from shared.workflows.gates.service import GateService

router = Router("prompts")


def prompts() -> PromptService:
    return PromptService(ProjectService())


@router.get("/")
def list_prompts(query: PromptListParams) -> Page[PromptRecord]:
    """List prompts, filtered by project, name, category, tag, label or a name search."""
    return prompts().search(query)


@router.post("/", status=201)
def create_prompt(body: PromptCreate) -> Prompt:
    """Create a prompt with its version 1."""
    return prompts().create(body)


@router.get("/{prompt_id}")
def get_prompt(request: Request, prompt_id: str, query: VersionSelector) -> Prompt:
    """Get a prompt at a version or label (latest by default); 304 on a matching ETag."""
    prompt, etag = prompts().fetch(prompt_id, query, request.if_none_match())
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if prompt is None:
        return Response(304, headers=headers)
    return json_response(prompt, headers=headers)


@router.put("/{prompt_id}")
def update_prompt(prompt_id: str, body: PromptUpdate) -> PromptUpdated:
    """Update metadata in place; content or config changes create a new version."""
    return prompts().update(prompt_id, body)


@router.delete("/{prompt_id}")
def delete_prompt(prompt_id: str) -> None:
    """Delete a prompt with its versions, release gates and evaluation runs."""
    delete_with_gates_and_runs(prompt_id)


@router.get("/{prompt_id}/versions")
def list_versions(prompt_id: str, query: VersionListParams) -> VersionPage:
    """List a prompt's versions, newest first."""
    return prompts().list_versions(prompt_id, query)


@router.get("/{prompt_id}/versions/{number}")
def get_version(prompt_id: str, number: int) -> PromptVersion:
    """Get one version."""
    return prompts().get_version(prompt_id, number)


@router.get("/{prompt_id}/diff")
def diff_versions(prompt_id: str, query: DiffParams) -> PromptDiff:
    """Diff two versions: content as a unified diff, config field by field."""
    return prompts().diff(prompt_id, query)


@router.put("/{prompt_id}/labels/{label}")
def move_label(prompt_id: str, label: str, body: LabelMove) -> Prompt:
    """Point a label at a version."""
    return GateService().move_label(prompt_id, label, body.version)


@router.delete("/{prompt_id}/labels/{label}")
def remove_label(prompt_id: str, label: str) -> None:
    """Remove a label."""
    prompts().remove_label(prompt_id, label)


@router.get("/{prompt_id}/gates")
def list_gates(prompt_id: str) -> GateList:
    """The prompt's release gates."""
    return GateService().list(prompt_id)


@router.put("/{prompt_id}/gates/{label}")
def gate_label(prompt_id: str, label: str, body: GateSet) -> Gate:
    """Protect a label: it moves only to versions with a passing run on the gate's dataset."""
    return GateService().put(prompt_id, label, body)


@router.delete("/{prompt_id}/gates/{label}")
def ungate_label(prompt_id: str, label: str) -> None:
    """Remove a label's gate."""
    GateService().remove(prompt_id, label)


handle = flask_function(router)
