"""The `prompts` function: versioned prompts with labels, diffs, cacheable run-time fetches (by id
or by name) and render previews."""

from shared.access.callers import Caller
from shared.access.models import Permission
from shared.access.policy import callers_project, first_of, in_project, project, resource
from shared.errors import ValidationFailed
from shared.executions.models import RunInputs, RunPreview
from shared.executions.planning import RunPlanner
from shared.http.flask_adapter import flask_function
from shared.http.messages import Request, Response, json_response
from shared.http.routing import PathRest, Router
from shared.pagination import Page
from shared.projects.service import ProjectService
from shared.prompts.models import (
    DiffParams,
    LabelChange,
    LabelHistoryParams,
    LabelMove,
    NamedPromptParams,
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
from shared.prompts.repository import prompt_project
from shared.prompts.service import PromptService
from shared.workflows.deletion.prompts import delete_with_gates_and_runs
from shared.workflows.gates.models import Gate, GateList, GateSet
from shared.workflows.gates.service import GateService

router = Router("prompts")
PROMPT = resource("prompt", "prompt_id", prompt_project)
FETCH = in_project(Permission.FETCH_PROMPTS, PROMPT)
READ = in_project(Permission.READ, PROMPT)
EDIT = in_project(Permission.EDIT, PROMPT)
OWN = in_project(Permission.OWN, PROMPT)


def prompts() -> PromptService:
    return PromptService(ProjectService())


@router.get("/", access=in_project(Permission.FETCH_PROMPTS, project("query")))
def list_prompts(query: PromptListParams, caller: Caller) -> Page[PromptRecord]:
    """List prompts of your projects, by project, name, category, tag, label or a name search."""
    return prompts().search(query, caller.projects_with(Permission.FETCH_PROMPTS))


@router.post("/", status=201, access=in_project(Permission.EDIT, project("body")))
def create_prompt(body: PromptCreate, caller: Caller) -> Prompt:
    """Create a prompt with its version 1; starting with a protected label needs an owner."""
    return prompts().create(body, caller)


def revalidated(fetched: tuple[Prompt | None, str]) -> Response:
    """A fetched prompt with its ETag, or 304 when the client's copy is still current."""
    prompt, etag = fetched
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if prompt is None:
        return Response(304, headers=headers)
    return json_response(prompt, headers=headers)


# Before the `/{prompt_id}/...` routes, which would take `by-name` for an id: a prompt named
# `versions` or `gates` is found by name too.
@router.get(
    "/by-name/{name}",
    access=in_project(Permission.FETCH_PROMPTS, first_of(project("query"), callers_project)),
)
def get_prompt_by_name(
    request: Request, name: PathRest, query: NamedPromptParams, caller: Caller
) -> Prompt:
    """Get a prompt by its name in a project, as `GET /prompts/{id}` does; 304 on a match."""
    project_id = query.project_id or caller.own_project
    if project_id is None:
        message = "Name the prompt's project with ?project_id= (a project API key implies it)."
        raise ValidationFailed(
            message, details=[{"loc": ["query", "project_id"], "msg": message, "type": "missing"}]
        )
    return revalidated(prompts().fetch_by_name(project_id, name, query, request.if_none_match()))


@router.get("/{prompt_id}", access=FETCH)
def get_prompt(request: Request, prompt_id: str, query: VersionSelector) -> Prompt:
    """Get a prompt at a version or label (latest by default); 304 on a matching ETag."""
    return revalidated(prompts().fetch(prompt_id, query, request.if_none_match()))


@router.put("/{prompt_id}", access=EDIT)
def update_prompt(prompt_id: str, body: PromptUpdate, caller: Caller) -> PromptUpdated:
    """Update metadata in place; content or config changes create a new version."""
    return prompts().update(prompt_id, body, caller.actor)


@router.delete("/{prompt_id}", access=OWN)
def delete_prompt(prompt_id: str) -> None:
    """Delete a prompt with its versions, release gates and evaluation runs."""
    delete_with_gates_and_runs(prompt_id)


@router.post("/{prompt_id}/render", access=FETCH)
def render_prompt(prompt_id: str, body: RunInputs) -> RunPreview:
    """What `POST /executions` with these fields would send to DeepSeek; nothing is called or
    stored, and missing variables are listed, their placeholders left as written."""
    projects = ProjectService()
    return RunPlanner(PromptService(projects), projects).preview(prompt_id, body)


@router.get("/{prompt_id}/versions", access=READ)
def list_versions(prompt_id: str, query: VersionListParams) -> VersionPage:
    """List a prompt's versions, newest first."""
    return prompts().list_versions(prompt_id, query)


@router.get("/{prompt_id}/versions/{number}", access=FETCH)
def get_version(prompt_id: str, number: int) -> PromptVersion:
    """Get one version."""
    return prompts().get_version(prompt_id, number)


@router.get("/{prompt_id}/diff", access=READ)
def diff_versions(prompt_id: str, query: DiffParams) -> PromptDiff:
    """Diff two versions: content as a unified diff, config field by field."""
    return prompts().diff(prompt_id, query)


@router.put("/{prompt_id}/labels/{label}", access=EDIT)
def move_label(prompt_id: str, label: str, body: LabelMove, caller: Caller) -> Prompt:
    """Point a label at a version; a protected label needs an owner, a gated one a passing run."""
    return GateService().move_label(prompt_id, label, body.version, caller)


@router.delete("/{prompt_id}/labels/{label}", access=EDIT)
def remove_label(prompt_id: str, label: str, caller: Caller) -> None:
    """Remove a label; a protected label needs an owner."""
    prompts().remove_label(prompt_id, label, caller)


@router.get("/{prompt_id}/labels/{label}/history", access=READ)
def label_history(prompt_id: str, label: str, query: LabelHistoryParams) -> Page[LabelChange]:
    """Every change of a label: from and to which version, by whom and when; newest first."""
    return prompts().label_history(prompt_id, label, query)


@router.get("/{prompt_id}/gates", access=READ)
def list_gates(prompt_id: str) -> GateList:
    """The prompt's release gates."""
    return GateService().list(prompt_id)


@router.put("/{prompt_id}/gates/{label}", access=OWN)
def gate_label(prompt_id: str, label: str, body: GateSet) -> Gate:
    """Protect a label: it moves only to versions with a passing run on the gate's dataset."""
    return GateService().put(prompt_id, label, body)


@router.delete("/{prompt_id}/gates/{label}", access=OWN)
def ungate_label(prompt_id: str, label: str) -> None:
    """Remove a label's gate."""
    GateService().remove(prompt_id, label)


handle = flask_function(router)
