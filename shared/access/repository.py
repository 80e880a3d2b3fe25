"""Storage of project API keys (as hashes), project members and the users seen signing in."""

from datetime import datetime, timedelta
from typing import Any, ClassVar

from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from shared.access.models import Actor, ApiKey, Member, Role, StoredKey
from shared.db import indexed_collection, to_object_id, utc_now
from shared.errors import Conflict

# `last_used_at` is written at most this often per key: a write per request would cost more
# than the request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def _api_key(document: dict[str, Any]) -> ApiKey:
    return ApiKey(
        id=str(document["_id"]),
        name=document["name"],
        role=document["role"],
        prefix=document["prefix"],
        created_at=document["created_at"],
        expires_at=document.get("expires_at"),
        last_used_at=document.get("last_used_at"),
        created_by=document.get("created_by"),
    )


class ApiKeyRepository:
    INDEXES: ClassVar[list[IndexModel]] = [
        IndexModel([("hash", ASCENDING)], unique=True, name="by_hash"),
        IndexModel([("project_id", ASCENDING), ("created_at", ASCENDING)], name="by_project"),
    ]

    def __init__(self) -> None:
        self.collection: Collection = indexed_collection("api_keys", self.INDEXES)

    def create(
        self,
        project_id: str,
        name: str,
        role: Role,
        expires_at: datetime | None,
        key_hash: str,
        prefix: str,
        created_by: Actor,
    ) -> ApiKey:
        document = {
            "project_id": project_id,
            "name": name,
            "role": role.value,
            "hash": key_hash,
            "prefix": prefix,
            "created_at": utc_now(),
            "expires_at": expires_at,
            "last_used_at": None,
            "revoked_at": None,
            "created_by": created_by.model_dump(),
        }
        self.collection.insert_one(document)
        return _api_key(document)

    def by_hash(self, key_hash: str) -> StoredKey | None:
        """The key with this hash, revoked or not; None when there is none."""
        document = self.collection.find_one({"hash": key_hash})
        if document is None:
            return None
        return StoredKey(
            id=str(document["_id"]),
            project_id=document["project_id"],
            name=document["name"],
            role=document["role"],
            expires_at=document.get("expires_at"),
            revoked=document.get("revoked_at") is not None,
            last_used_at=document.get("last_used_at"),
        )

    def mark_used(self, key_id: str) -> None:
        """Move `last_used_at` to now, unless another replica did so within the resolution."""
        now = utc_now()
        self.collection.update_one(
            {
                "_id": to_object_id(key_id),
                "$or": [
                    {"last_used_at": None},
                    {"last_used_at": {"$lt": now - LAST_USED_RESOLUTION}},
                ],
            },
            {"$set": {"last_used_at": now}},
        )

    def live_in(self, project_id: str) -> list[ApiKey]:
        """The project's keys that are not revoked, oldest first."""
        cursor = self.collection.find({"project_id": project_id, "revoked_at": None}).sort(
            [("created_at", ASCENDING), ("_id", ASCENDING)]
        )
        return [_api_key(document) for document in cursor]

    def revoke(self, project_id: str, key_id: str) -> bool:
        """Revoke a live key of the project; False when it has none by that id."""
        object_id = to_object_id(key_id)
        if object_id is None:
            return False
        result = self.collection.update_one(
            {"_id": object_id, "project_id": project_id, "revoked_at": None},
            {"$set": {"revoked_at": utc_now()}},
        )
        return result.matched_count == 1

    def delete_project(self, project_id: str) -> None:
        self.collection.delete_many({"project_id": project_id})


def _member(document: dict[str, Any], user: dict[str, Any] | None) -> Member:
    return Member(
        user_id=document["user_id"],
        role=document["role"],
        name=(user or {}).get("name"),
        email=(user or {}).get("email"),
        added_at=document["added_at"],
        updated_at=document["updated_at"],
    )


def _user_key(issuer: str, user_id: str) -> str:
    return f"{issuer} {user_id}"


class MemberRepository:
    INDEXES: ClassVar[list[IndexModel]] = [
        IndexModel(
            [("project_id", ASCENDING), ("issuer", ASCENDING), ("user_id", ASCENDING)],
            unique=True,
            name="one_role_per_user",
        ),
        IndexModel([("issuer", ASCENDING), ("user_id", ASCENDING)], name="by_user"),
    ]

    def __init__(self) -> None:
        self.collection: Collection = indexed_collection("members", self.INDEXES)
        self.users: Collection = indexed_collection("users", [])

    def role(self, project_id: str, issuer: str, user_id: str) -> Role | None:
        document = self.collection.find_one(
            {"project_id": project_id, "issuer": issuer, "user_id": user_id}, {"role": 1}
        )
        return Role(document["role"]) if document else None

    def projects_of(self, issuer: str, user_id: str, roles: frozenset[Role]) -> list[str]:
        """The projects where the user holds one of `roles`."""
        documents = self.collection.find(
            {"issuer": issuer, "user_id": user_id, "role": {"$in": sorted(roles)}},
            {"project_id": 1},
        )
        return [document["project_id"] for document in documents]

    def put(self, project_id: str, issuer: str, user_id: str, role: Role) -> Member:
        """Give the user a role in the project, adding them when they are not a member."""
        now = utc_now()
        try:
            document = self.collection.find_one_and_update(
                {"project_id": project_id, "issuer": issuer, "user_id": user_id},
                {
                    "$set": {"role": role.value, "updated_at": now},
                    "$setOnInsert": {"added_at": now},
                },
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError as exc:  # two first grants at once: the other one won
            raise Conflict("The member was just added; try again.") from exc
        return _member(document, self.users.find_one({"_id": _user_key(issuer, user_id)}))

    def members(self, project_id: str, issuer: str) -> list[Member]:
        documents = list(
            self.collection.find({"project_id": project_id, "issuer": issuer}).sort(
                [("added_at", ASCENDING), ("_id", ASCENDING)]
            )
        )
        keys = [_user_key(issuer, document["user_id"]) for document in documents]
        users = {user["_id"]: user for user in self.users.find({"_id": {"$in": keys}})}
        return [
            _member(document, users.get(key)) for document, key in zip(documents, keys, strict=True)
        ]

    def owners(self, project_id: str, issuer: str) -> int:
        return self.collection.count_documents(
            {"project_id": project_id, "issuer": issuer, "role": Role.OWNER.value}
        )

    def remove(self, project_id: str, issuer: str, user_id: str) -> bool:
        result = self.collection.delete_one(
            {"project_id": project_id, "issuer": issuer, "user_id": user_id}
        )
        return result.deleted_count == 1

    def delete_project(self, project_id: str) -> None:
        self.collection.delete_many({"project_id": project_id})

    def remember_user(self, issuer: str, user_id: str, name: str | None, email: str | None) -> None:
        """Keep the user's display claims, for member lists."""
        self.users.update_one(
            {"_id": _user_key(issuer, user_id)},
            {"$set": {"issuer": issuer, "user_id": user_id, "name": name, "email": email}},
            upsert=True,
        )
