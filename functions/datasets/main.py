"""The `datasets` function: sets of test cases in a project, their cases added in bulk."""

from shared.access.models import Permission
from shared.access.policy import in_project, project, resource
from shared.datasets.models import (
    Case,
    CaseCreate,
    CasePageParams,
    CasesAdded,
    CaseUpdate,
    Dataset,
    DatasetCreate,
    DatasetListParams,
    DatasetUpdate,
    DatasetWithCases,
)
from shared.datasets.repository import dataset_project
from shared.datasets.service import DatasetService
from shared.http.flask_adapter import flask_function
from shared.http.messages import Request
from shared.http.routing import BodyDoc, Router
from shared.pagination import Page
from shared.projects.service import ProjectService
from shared.workflows.deletion.datasets import delete_unless_gated

router = Router("datasets")
DATASET = resource("dataset", "dataset_id", dataset_project)
READ = in_project(Permission.READ, DATASET)
EDIT = in_project(Permission.EDIT, DATASET)
CASES = BodyDoc(
    {"application/json": list[CaseCreate], "application/x-ndjson": str},
    "Cases to add, at most 10,000, all or none: a JSON list of cases, or JSON Lines "
    "(`application/x-ndjson`), one case per line, blank lines skipped.",
)


def datasets() -> DatasetService:
    return DatasetService(ProjectService())


@router.get("/", access=in_project(Permission.READ, project("query")))
def list_datasets(query: DatasetListParams) -> Page[Dataset]:
    """List a project's datasets, newest first."""
    return datasets().search(query)


@router.post("/", status=201, access=in_project(Permission.EDIT, project("body")))
def create_dataset(body: DatasetCreate) -> Dataset:
    """Create a dataset, optionally with its first cases."""
    return datasets().create(body)


@router.get("/{dataset_id}", access=READ)
def get_dataset(dataset_id: str, query: CasePageParams) -> DatasetWithCases:
    """Get a dataset with a page of its cases, in insertion order."""
    return datasets().get_with_cases(dataset_id, query)


@router.put("/{dataset_id}", access=EDIT)
def update_dataset(dataset_id: str, body: DatasetUpdate) -> Dataset:
    """Rename a dataset or change its description."""
    return datasets().update(dataset_id, body)


@router.delete("/{dataset_id}", access=EDIT)
def delete_dataset(dataset_id: str) -> None:
    """Delete a dataset and its cases."""
    delete_unless_gated(dataset_id)


@router.post("/{dataset_id}/cases", status=201, access=EDIT, body_doc=CASES)
def add_cases(dataset_id: str, request: Request) -> CasesAdded:
    """Add cases from a JSON list or JSON Lines (application/x-ndjson): all or none."""
    return datasets().import_cases(dataset_id, request.json_records)


@router.put("/{dataset_id}/cases/{case_id}", access=EDIT)
def update_case(dataset_id: str, case_id: str, body: CaseUpdate) -> Case:
    """Replace the given fields of a case."""
    return datasets().update_case(dataset_id, case_id, body)


@router.delete("/{dataset_id}/cases/{case_id}", access=EDIT)
def delete_case(dataset_id: str, case_id: str) -> None:
    """Remove a case from its dataset."""
    datasets().delete_case(dataset_id, case_id)


handle = flask_function(router)
