"""Storage of datasets and their cases: one document per case in `dataset_cases`."""

import json
from typing import Any, ClassVar

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from shared.datasets.models import (
    Case,
    CaseCreate,
    CasePageParams,
    CaseUpdate,
    Dataset,
    DatasetCreate,
    DatasetListParams,
    DatasetUpdate,
)
from shared.db import indexed_collection, owning_project, to_object_id, utc_now
from shared.errors import Conflict
from shared.pagination import PageParams, find_page


def _dataset(document: dict[str, Any]) -> Dataset:
    return Dataset(
        **{
            **document,
            "id": str(document["_id"]),
            "project_id": str(document["project_id"]),
        }
    )


def _case(document: dict[str, Any]) -> Case:
    assertions = [
        {**spec, "schema": json.loads(spec["schema"])} if spec["type"] == "json_schema" else spec
        for spec in document.get("assertions", [])
    ]
    return Case(
        **{
            **document,
            "id": str(document["_id"]),
            "dataset_id": str(document["dataset_id"]),
            "assertions": assertions,
        }
    )


def _stored_case(case: CaseCreate, given_only: bool = False) -> dict[str, Any]:
    """Case fields as stored. A JSON Schema is kept as JSON text: its keys (`$ref`, `$defs`) are
    not usable as MongoDB field names."""
    fields = case.model_dump(by_alias=True, exclude_unset=given_only)
    if "assertions" in fields:
        fields["assertions"] = [
            {**spec, "schema": json.dumps(spec["schema"])}
            if spec["type"] == "json_schema"
            else spec
            for spec in fields["assertions"]
        ]
    return fields


def _name_taken(name: str) -> Conflict:
    return Conflict(f"A dataset named {name!r} already exists in the project.", code="name_taken")


class DatasetRepository:
    DATASET_INDEXES: ClassVar[list[IndexModel]] = [
        IndexModel(
            [("project_id", ASCENDING), ("name", ASCENDING)],
            unique=True,
            name="unique_name_in_project",
        ),
        IndexModel(
            [("project_id", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)],
            name="project_newest_first",
        ),
    ]
    CASE_INDEXES: ClassVar[list[IndexModel]] = [
        IndexModel(
            [("dataset_id", ASCENDING), ("created_at", ASCENDING), ("_id", ASCENDING)],
            name="dataset_insertion_order",
        ),
    ]

    def __init__(self) -> None:
        self.datasets: Collection = indexed_collection("datasets", self.DATASET_INDEXES)
        self.cases: Collection = indexed_collection("dataset_cases", self.CASE_INDEXES)

    def create(self, data: DatasetCreate) -> Dataset:
        """Insert an empty dataset; a name taken in the project is a conflict."""
        now = utc_now()
        document = {
            "project_id": to_object_id(data.project_id),
            "name": data.name,
            "description": data.description,
            "case_count": 0,
            "created_at": now,
            "updated_at": now,
        }
        try:
            self.datasets.insert_one(document)
        except DuplicateKeyError as exc:
            raise _name_taken(data.name) from exc
        return _dataset(document)

    def get(self, dataset_id: str) -> Dataset | None:
        object_id = to_object_id(dataset_id)
        document = object_id and self.datasets.find_one({"_id": object_id})
        return _dataset(document) if document else None

    def search(self, params: DatasetListParams) -> tuple[list[Dataset], str | None, int] | None:
        """A page of a project's datasets, newest first; None when the id cannot exist."""
        project_id = to_object_id(params.project_id)
        if project_id is None:
            return None
        documents, next_cursor, total = find_page(self.datasets, {"project_id": project_id}, params)
        return [_dataset(document) for document in documents], next_cursor, total

    def update(self, dataset_id: str, changes: DatasetUpdate) -> Dataset | None:
        """Apply the given fields; None when the dataset does not exist."""
        object_id = to_object_id(dataset_id)
        if object_id is None:
            return None
        fields = changes.model_dump(exclude_unset=True, exclude_none=True)
        try:
            document = self.datasets.find_one_and_update(
                {"_id": object_id},
                {"$set": {**fields, "updated_at": utc_now()}},
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError as exc:
            raise _name_taken(fields["name"]) from exc
        return _dataset(document) if document else None

    def delete(self, dataset_id: str) -> bool:
        """Delete a dataset, then its cases (a crash in between leaves no visible dataset)."""
        object_id = to_object_id(dataset_id)
        if object_id is None or not self.datasets.delete_one({"_id": object_id}).deleted_count:
            return False
        self.cases.delete_many({"dataset_id": object_id})
        return True

    def count_in_project(self, project_id: str) -> int:
        object_id = to_object_id(project_id)
        return self.datasets.count_documents({"project_id": object_id}) if object_id else 0

    def delete_project_datasets(self, project_id: str) -> int:
        """Delete every dataset of a project with its cases; the number of datasets removed."""
        object_id = to_object_id(project_id)
        dataset_ids = [
            document["_id"]
            for document in self.datasets.find({"project_id": object_id}, {"_id": 1})
        ]
        if not dataset_ids:
            return 0
        deleted = self.datasets.delete_many({"_id": {"$in": dataset_ids}}).deleted_count
        self.cases.delete_many({"dataset_id": {"$in": dataset_ids}})
        return deleted

    def add_cases(self, dataset_id: str, cases: list[CaseCreate]) -> tuple[list[Case], int] | None:
        """Insert the cases in one write, in list order; the stored cases and the new case
        count, or None when the dataset does not exist (or went away meanwhile)."""
        object_id = to_object_id(dataset_id)
        if object_id is None:
            return None
        now = utc_now()
        # Ids made here, in list order: cases sharing a timestamp read back in the order given.
        documents = [
            {"_id": ObjectId(), "dataset_id": object_id, **_stored_case(case), "created_at": now}
            for case in cases
        ]
        if documents:
            self.cases.insert_many(documents, ordered=True)
        dataset = self.datasets.find_one_and_update(
            {"_id": object_id},
            {"$inc": {"case_count": len(documents)}, "$set": {"updated_at": now}},
            return_document=ReturnDocument.AFTER,
        )
        if dataset is None:
            self.cases.delete_many({"_id": {"$in": [document["_id"] for document in documents]}})
            return None
        return [_case(document) for document in documents], dataset["case_count"]

    def case_page(self, dataset_id: str, params: CasePageParams) -> tuple[list[Case], str | None]:
        """A page of a dataset's cases in insertion order, and the next cursor."""
        # Case pages allow larger limits than PageParams validates; both are checked already.
        page = PageParams.model_construct(limit=params.limit, cursor=params.cursor, page=None)
        documents, next_cursor, _ = find_page(
            self.cases, {"dataset_id": to_object_id(dataset_id)}, page, ascending=True
        )
        return [_case(document) for document in documents], next_cursor

    def all_cases(self, dataset_id: str, tags: list[str]) -> list[Case]:
        """Every case of a dataset in insertion order; with tags, those carrying one of them."""
        query: dict[str, Any] = {"dataset_id": to_object_id(dataset_id)}
        if tags:
            query["tags"] = {"$in": tags}
        documents = self.cases.find(query).sort([("created_at", ASCENDING), ("_id", ASCENDING)])
        return [_case(document) for document in documents]

    def update_case(self, dataset_id: str, case_id: str, changes: CaseUpdate) -> Case | None:
        """Replace the given fields of a case; None when the dataset has no such case."""
        object_id, case_object_id = to_object_id(dataset_id), to_object_id(case_id)
        if object_id is None or case_object_id is None:
            return None
        fields = _stored_case(changes, given_only=True)
        selector = {"_id": case_object_id, "dataset_id": object_id}
        if not fields:
            document = self.cases.find_one(selector)
            return _case(document) if document else None
        document = self.cases.find_one_and_update(
            selector, {"$set": fields}, return_document=ReturnDocument.AFTER
        )
        if document is None:
            return None
        self.datasets.update_one({"_id": object_id}, {"$set": {"updated_at": utc_now()}})
        return _case(document)

    def delete_case(self, dataset_id: str, case_id: str) -> bool:
        """Remove a case and count it out of its dataset."""
        object_id, case_object_id = to_object_id(dataset_id), to_object_id(case_id)
        if object_id is None or case_object_id is None:
            return False
        deleted = self.cases.delete_one({"_id": case_object_id, "dataset_id": object_id})
        if not deleted.deleted_count:
            return False
        self.datasets.update_one(
            {"_id": object_id}, {"$inc": {"case_count": -1}, "$set": {"updated_at": utc_now()}}
        )
        return True


def dataset_project(dataset_id: str) -> str | None:
    """The project the dataset belongs to; None when it does not exist."""
    return owning_project("datasets", dataset_id)
