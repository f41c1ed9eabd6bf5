"""Who may do what (DESIGN §7). Roles are Django groups holding these permissions:

viewer   hub.view_task, hub.view_node, hub.view_team
operator viewer + hub.submit_task + hub.control_task (cancel, force fallback)
admin    operator + hub.manage_nodes + hub.switch_fallback_mode + hub.add_team/change_team
(a team named on submit is still created, with the default policy, for any submitter)
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission

VIEW = "hub.view_task"
SUBMIT = "hub.submit_task"
CONTROL = "hub.control_task"
MANAGE_NODES = "hub.manage_nodes"
SWITCH_FALLBACK = "hub.switch_fallback_mode"
ADD_TEAM = "hub.add_team"
CHANGE_TEAM = "hub.change_team"

ROLES: dict[str, list[str]] = {
    "viewer": ["view_task", "view_node", "view_team", "view_taskevent", "view_nodeevent"],
    "operator": ["submit_task", "control_task"],
    "admin": ["manage_nodes", "switch_fallback_mode", "add_team", "change_team"],
}
# Each role includes the ones before it.
ROLE_ORDER = ["viewer", "operator", "admin"]


def _perm(user: Any, perm: str) -> bool:
    return bool(user and user.is_authenticated and user.has_perm(perm))


class CanViewHub(BasePermission):
    """The default: reading anything needs the view permission, writing needs more."""

    def has_permission(self, request: Any, view: Any) -> bool:
        return _perm(request.user, VIEW)


def requires(read: str = VIEW, write: str = VIEW) -> type[BasePermission]:
    """A permission class: ``read`` for safe methods, ``write`` for the others."""

    class _Requires(BasePermission):
        def has_permission(self, request: Any, view: Any) -> bool:
            needed = read if request.method in SAFE_METHODS else write
            return _perm(request.user, VIEW) and _perm(request.user, needed)

    _Requires.__name__ = f"Requires_{write.replace('.', '_')}"
    return _Requires
