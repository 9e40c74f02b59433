"""``resources.add``, ``resources.list``, ``resources.remove``: a project's scan targets (FEAT-004).

The registry decides where ``scan.*`` may point, so changing it is governed like any
other capability: policy-checked, and audited with the principal and the resource.

- ``resources.add`` is WRITE, MEDIUM: it widens where a scanner may run, but a scan is
  HIGH and needs its own allow. Registering a target already registered returns the
  stored one and changes nothing.
- ``resources.list`` is READ, LOW.
- ``resources.remove`` is DELETE, so HIGH (Risk Consistency Check): it forgets the target
  and unlinks the findings that pointed to it, which registering it again does not
  relink. It is irreversible and leaves the undo to the caller (a workflow step may
  declare one), which HIGH requires; the default policy asks a human for it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import Field, JsonValue

from aifr.capabilities import Capability, Compensation, capability
from aifr.errors import ErrorCode, FindingsError
from aifr.findings.models import Project, ResourceKind
from aifr.findings.resources import new_resource
from aifr.stdlib.findings import FindingsStores, Ident, report_to_audit

__all__ = ["build_resource_capabilities"]

KindName = Literal["host", "url", "cidr", "repository"]
Value = Annotated[str, Field(min_length=1, max_length=2048)]


def build_resource_capabilities(open_stores: Callable[[], FindingsStores]) -> list[Capability]:
    """The resource registry capabilities over the stores ``open_stores`` returns."""

    @capability(
        "resources.add",
        operation="WRITE",
        risk="MEDIUM",
        side_effect_scope="database",
        side_effect_description="registers a scan target of a findings project",
        tags=("stdlib", "findings", "resources"),
        justification=(
            "a registered target is where scan.* may run, but each scan is HIGH and needs "
            "its own allow; the target can be removed again"
        ),
    )
    def add_resource(
        project: Ident,
        value: Value,
        kind: KindName | None = None,
        name: Annotated[str, Field(max_length=200)] | None = None,
    ) -> dict[str, JsonValue]:
        """Register a scan target (host, http(s) URL, CIDR or repository URL) of a project.

        The project is created when it does not exist. A target already registered is
        returned as stored, with ``added`` false.

        Args:
            project: The findings project id.
            value: The host, URL, CIDR or repository URL.
            kind: host, url, cidr or repository (default: guessed from the value).
            name: A label.
        """
        resource = new_resource(
            project, value, kind=ResourceKind(kind) if kind else None, name=name
        )
        store, registry = open_stores()
        store.save_project(Project(id=project, name=project, created_at=datetime.now(UTC)))
        stored = registry.add_resource(resource)
        added = stored.id == resource.id
        report_to_audit(
            {
                "project": project,
                "resource_id": stored.id,
                "kind": stored.kind.value,
                "value": stored.value,
                "added": added,
            }
        )
        return {**stored.model_dump(mode="json"), "added": added}

    @capability(
        "resources.list",
        operation="READ",
        risk="LOW",
        idempotent=True,
        tags=("stdlib", "findings", "resources"),
        justification="reads a project's registered scan targets",
    )
    def list_resources(project: Ident) -> list[dict[str, JsonValue]]:
        """A project's registered scan targets, oldest first.

        Args:
            project: The findings project id.
        """
        _, registry = open_stores()
        return [r.model_dump(mode="json") for r in registry.list_resources(project)]

    @capability(
        "resources.remove",
        operation="DELETE",
        risk="HIGH",
        reversible=False,
        compensation=Compensation(supported=True, strategy="declared_by_caller"),
        side_effect_scope="database",
        side_effect_description=(
            "forgets a scan target and unlinks the findings that pointed to it"
        ),
        tags=("stdlib", "findings", "resources"),
        justification=(
            "a delete (HIGH by the Risk Consistency Check): the findings' links to the "
            "target are not restored by registering it again"
        ),
    )
    def remove_resource(project: Ident, resource_id: Ident) -> dict[str, JsonValue]:
        """Forget a registered scan target; findings linked to it keep all but the link.

        Args:
            project: The findings project id.
            resource_id: The resource id (as listed).
        """
        _, registry = open_stores()
        existing = registry.get_resource(project, resource_id)
        if existing is None or not registry.remove_resource(project, resource_id):
            raise FindingsError(
                f"resource {resource_id!r} is not registered in project {project!r}",
                code=ErrorCode.FINDINGS_NOT_FOUND,
                project_id=project,
                resource_id=resource_id,
            )
        removed: dict[str, JsonValue] = existing.model_dump(mode="json")
        report_to_audit(
            {
                "project": project,
                "resource_id": resource_id,
                "kind": existing.kind.value,
                "value": existing.value,
            }
        )
        return {**removed, "removed": True}

    return [add_resource, list_resources, remove_resource]
