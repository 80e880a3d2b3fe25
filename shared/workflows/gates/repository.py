"""Storage of release gates: one document per (prompt, label)."""

from typing import Any, ClassVar

from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.collection import Collection

from shared.db import indexed_collection, to_object_id, utc_now
from shared.workflows.gates.models import Gate


def _gate(document: dict[str, Any]) -> Gate:
    return Gate(
        **{
            **document,
            "prompt_id": str(document["prompt_id"]),
            "dataset_id": str(document["dataset_id"]),
        }
    )


class GateRepository:
    INDEXES: ClassVar[list[IndexModel]] = [
        IndexModel([("prompt_id", ASCENDING), ("label", ASCENDING)], unique=True, name="label"),
        IndexModel([("project_id", ASCENDING)], name="project"),
        IndexModel([("dataset_id", ASCENDING)], name="dataset"),
    ]

    def __init__(self) -> None:
        self.gates: Collection = indexed_collection("gates", self.INDEXES)

    def put(
        self, project_id: str, prompt_id: str, label: str, dataset_id: str, min_pass_rate: float
    ) -> Gate:
        """Create or replace the gate on a label."""
        now = utc_now()
        document = self.gates.find_one_and_update(
            {"prompt_id": to_object_id(prompt_id), "label": label},
            {
                "$set": {
                    "project_id": to_object_id(project_id),
                    "dataset_id": to_object_id(dataset_id),
                    "min_pass_rate": min_pass_rate,
                    "updated_at": now,
                },
                "$setOnInsert": {"created_at": now},
            },
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        return _gate(document)

    def get(self, prompt_id: str, label: str) -> Gate | None:
        object_id = to_object_id(prompt_id)
        document = object_id and self.gates.find_one({"prompt_id": object_id, "label": label})
        return _gate(document) if document else None

    def of_prompt(self, prompt_id: str) -> list[Gate]:
        object_id = to_object_id(prompt_id)
        if object_id is None:
            return []
        return [_gate(doc) for doc in self.gates.find({"prompt_id": object_id}).sort("label")]

    def delete(self, prompt_id: str, label: str) -> bool:
        object_id = to_object_id(prompt_id)
        deleted = object_id and self.gates.delete_one({"prompt_id": object_id, "label": label})
        return bool(deleted and deleted.deleted_count)

    def count_on_dataset(self, dataset_id: str) -> int:
        object_id = to_object_id(dataset_id)
        return self.gates.count_documents({"dataset_id": object_id}) if object_id else 0

    def delete_for_prompt(self, prompt_id: str) -> None:
        self.gates.delete_many({"prompt_id": to_object_id(prompt_id)})

    def delete_project_gates(self, project_id: str) -> None:
        self.gates.delete_many({"project_id": to_object_id(project_id)})
