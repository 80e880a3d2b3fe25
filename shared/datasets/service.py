"""What a team does with datasets: sets of test cases in a project, imported in bulk."""

from collections.abc import Callable, Iterable
from typing import Any

from pydantic import ValidationError

from shared.datasets.models import (
    MAX_CASES_PER_REQUEST,
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
from shared.datasets.repository import DatasetRepository
from shared.errors import ValidationFailed, not_found
from shared.http.messages import JsonRecords
from shared.pagination import Page
from shared.projects.models import ProjectLookup

# A 10,000-line file with every line wrong must not become a 10,000-entry error.
MAX_REPORTED_ERRORS = 100


class DatasetService:
    def __init__(self, projects: ProjectLookup) -> None:
        self.datasets = DatasetRepository()
        self.projects = projects

    def create(self, data: DatasetCreate) -> Dataset:
        """Create a dataset in an existing project, with its first cases if given."""
        self.projects.get(data.project_id)
        dataset = self.datasets.create(data)
        if data.cases:
            self.add_cases(dataset.id, data.cases)
            return self.get(dataset.id)
        return dataset

    def search(self, params: DatasetListParams) -> Page[Dataset]:
        """A project's datasets, newest first."""
        return Page.of(self.datasets.search(params), params)

    def get(self, dataset_id: str) -> Dataset:
        """One dataset, without its cases."""
        dataset = self.datasets.get(dataset_id)
        if dataset is None:
            raise not_found("dataset", dataset_id)
        return dataset

    def get_with_cases(self, dataset_id: str, params: CasePageParams) -> DatasetWithCases:
        """A dataset with a page of its cases, in insertion order."""
        dataset = self.get(dataset_id)
        cases, next_cursor = self.datasets.case_page(dataset_id, params)
        return DatasetWithCases(**dataset.model_dump(), cases=cases, next_cursor=next_cursor)

    def update(self, dataset_id: str, changes: DatasetUpdate) -> Dataset:
        dataset = self.datasets.update(dataset_id, changes)
        if dataset is None:
            raise not_found("dataset", dataset_id)
        return dataset

    def delete(self, dataset_id: str) -> None:
        """Delete a dataset and its cases; the release gates that may rely on it belong to
        another domain, which `shared.workflows.deletion.datasets` checks first."""
        if not self.datasets.delete(dataset_id):
            raise not_found("dataset", dataset_id)

    def import_cases(self, dataset_id: str, read_records: Callable[[], JsonRecords]) -> CasesAdded:
        """Add the cases of the body `read_records` reads (see `cases_of`), once the dataset is
        known to exist: all of them or, if any is invalid, none."""
        self.get(dataset_id)
        return self.add_cases(dataset_id, cases_of(read_records()))

    def add_cases(self, dataset_id: str, cases: list[CaseCreate]) -> CasesAdded:
        """Append validated cases to a dataset in one write."""
        added = self.datasets.add_cases(dataset_id, cases)
        if added is None:
            raise not_found("dataset", dataset_id)
        items, case_count = added
        return CasesAdded(items=items, case_count=case_count)

    def update_case(self, dataset_id: str, case_id: str, changes: CaseUpdate) -> Case:
        """Replace the given fields of one case."""
        self.get(dataset_id)
        case = self.datasets.update_case(dataset_id, case_id, changes)
        if case is None:
            raise not_found("case", case_id)
        return case

    def delete_case(self, dataset_id: str, case_id: str) -> None:
        """Remove one case from its dataset."""
        self.get(dataset_id)
        if not self.datasets.delete_case(dataset_id, case_id):
            raise not_found("case", case_id)


def cases_of(records: JsonRecords) -> list[CaseCreate]:
    """The cases of a body's records, every one validated first; any failure is a 422 naming
    each failing list index or 1-based line."""
    entries, errors = records.entries, list(records.errors)
    if not entries and not errors:
        raise ValidationFailed(
            "The body holds no case.",
            details=[{"loc": ["body"], "msg": "no case given", "type": "too_short"}],
        )
    if len(entries) + len(errors) > MAX_CASES_PER_REQUEST:
        raise ValidationFailed(
            f"At most {MAX_CASES_PER_REQUEST} cases can be added in one request.",
            code="too_many_cases",
            details={"limit": MAX_CASES_PER_REQUEST},
        )
    cases = []
    for location, item in entries:
        try:
            cases.append(CaseCreate.model_validate(item))
        except ValidationError as exc:
            errors.extend(_located(location, exc))
    if errors:
        raise _invalid_cases(errors)
    return cases


def _located(location: list[Any], error: ValidationError) -> Iterable[dict[str, Any]]:
    for item in error.errors(include_url=False, include_input=False, include_context=False):
        yield {"loc": [*location, *item["loc"]], "msg": item["msg"], "type": item["type"]}


def _position(error: dict[str, Any]) -> int:
    """The list index or line number an error is about."""
    location = error["loc"]
    return location[2] if location[1] == "line" else location[1]


def _invalid_cases(errors: list[dict[str, Any]]) -> ValidationFailed:
    """A 422 naming the failing lines (or list indexes); nothing is imported."""
    errors = sorted(errors, key=_position)
    lines = sorted({_position(error) for error in errors if error["loc"][1] == "line"})
    if lines:
        shown = ", ".join(str(line) for line in lines[:20]) + (", ..." if len(lines) > 20 else "")
        message = f"Line(s) {shown} are not valid cases; nothing was imported."
    else:
        message = "Some cases are not valid; nothing was imported."
    return ValidationFailed(message, details=errors[:MAX_REPORTED_ERRORS])
