"""Storage of projects."""

from typing import Any, ClassVar

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from shared.db import indexed_collection, to_object_id, utc_now, within_projects
from shared.errors import Conflict
from shared.pagination import PageParams, find_page
from shared.projects.models import Project, ProjectCreate, ProjectUpdate


def _project(document: dict[str, Any]) -> Project:
    return Project(id=str(document["_id"]), **{k: v for k, v in document.items() if k != "_id"})


def _name_taken(name: str) -> Conflict:
    return Conflict(f"A project named {name!r} already exists.", code="name_taken")


class ProjectRepository:
    INDEXES: ClassVar[list[IndexModel]] = [
        IndexModel([("name", ASCENDING)], unique=True, name="unique_name"),
        IndexModel([("created_at", DESCENDING), ("_id", DESCENDING)], name="newest_first"),
    ]

    def __init__(self) -> None:
        self.collection: Collection = indexed_collection("projects", self.INDEXES)

    def create(self, data: ProjectCreate) -> Project:
        """Insert a project; a taken name is a conflict."""
        now = utc_now()
        document = {**data.model_dump(), "created_at": now, "updated_at": now}
        try:
            self.collection.insert_one(document)
        except DuplicateKeyError as exc:
            raise _name_taken(data.name) from exc
        return _project(document)

    def get(self, project_id: str) -> Project | None:
        object_id = to_object_id(project_id)
        document = object_id and self.collection.find_one({"_id": object_id})
        return _project(document) if document else None

    def search(
        self, params: PageParams, within: list[str] | None
    ) -> tuple[list[Project], str | None, int]:
        """A page of the `within` projects (None: every project), newest first."""
        documents, next_cursor, total = find_page(
            self.collection, within_projects(within, "_id"), params
        )
        return [_project(document) for document in documents], next_cursor, total

    def update(self, project_id: str, changes: ProjectUpdate) -> Project | None:
        """Apply the given fields; None when the project does not exist."""
        object_id = to_object_id(project_id)
        if object_id is None:
            return None
        fields = changes.model_dump(exclude_unset=True, exclude_none=True, exclude={"limits"})
        if changes.limits is not None:
            # Only the limits given change; an explicit null lifts one.
            given = changes.limits.model_dump(include=changes.limits.model_fields_set)
            fields |= {f"limits.{name}": value for name, value in given.items()}
        try:
            document = self.collection.find_one_and_update(
                {"_id": object_id},
                {"$set": {**fields, "updated_at": utc_now()}},
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError as exc:
            raise _name_taken(fields["name"]) from exc
        return _project(document) if document else None

    def delete(self, project_id: str) -> bool:
        object_id = to_object_id(project_id)
        return bool(object_id and self.collection.delete_one({"_id": object_id}).deleted_count)
