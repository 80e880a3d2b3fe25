"""The `prompts` function: versioned prompts with labels, diffs and cacheable run-time fetches."""

from shared.http.flask_adapter import flask_function
from shared.http.messages import Request, Response, json_response, no_content
from shared.http.routing import Router
from shared.prompts.models import (
    DiffParams,
    LabelMove,
    PromptCreate,
    PromptListParams,
    PromptUpdate,
    VersionListParams,
    VersionSelector,
)
from shared.prompts.service import PromptService

router = Router("prompts")


@router.get("/")
def list_prompts(request: Request) -> Response:
    return json_response(PromptService().search(request.query_as(PromptListParams)))


@router.post("/")
def create_prompt(request: Request) -> Response:
    return json_response(PromptService().create(request.body_as(PromptCreate)), 201)


@router.get("/{prompt_id}")
def get_prompt(request: Request, prompt_id: str) -> Response:
    prompt, etag = PromptService().fetch(
        prompt_id, request.query_as(VersionSelector), request.if_none_match()
    )
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if prompt is None:
        return Response(304, headers=headers)
    return json_response(prompt, headers=headers)


@router.put("/{prompt_id}")
def update_prompt(request: Request, prompt_id: str) -> Response:
    return json_response(PromptService().update(prompt_id, request.body_as(PromptUpdate)))


@router.delete("/{prompt_id}")
def delete_prompt(request: Request, prompt_id: str) -> Response:
    PromptService().delete(prompt_id)
    return no_content()


@router.get("/{prompt_id}/versions")
def list_versions(request: Request, prompt_id: str) -> Response:
    return json_response(
        PromptService().list_versions(prompt_id, request.query_as(VersionListParams))
    )


@router.get("/{prompt_id}/versions/{number:int}")
def get_version(request: Request, prompt_id: str, number: int) -> Response:
    return json_response(PromptService().get_version(prompt_id, number))


@router.get("/{prompt_id}/diff")
def diff_versions(request: Request, prompt_id: str) -> Response:
    return json_response(PromptService().diff(prompt_id, request.query_as(DiffParams)))


@router.put("/{prompt_id}/labels/{label}")
def move_label(request: Request, prompt_id: str, label: str) -> Response:
    move = request.body_as(LabelMove)
    return json_response(PromptService().move_label(prompt_id, label, move.version))


@router.delete("/{prompt_id}/labels/{label}")
def remove_label(request: Request, prompt_id: str, label: str) -> Response:
    PromptService().remove_label(prompt_id, label)
    return no_content()


handle = flask_function(router)
