"""An offline Kubernetes RBAC evaluator: can this subject do this verb on this resource here?

A re-implementation, for tests, of the rules of Kubernetes' RBAC authorizer and of the
ClusterRole aggregation controller, from kubernetes/kubernetes (v1.30):

- ``plugin/pkg/auth/authorizer/rbac/rbac.go`` (``RulesFor``/``VisitRulesFor``: the rules of every
  ClusterRoleBinding, and of the RoleBindings of the request's namespace, whose subjects apply to
  the user; a RoleBinding that names a ClusterRole grants its rules in its own namespace only),
  ``pkg/apis/rbac/v1/evaluation_helpers.go`` (``VerbMatches``, ``APIGroupMatches``,
  ``ResourceMatches`` with ``*`` and ``*/subresource``, ``ResourceNameMatches``: a rule with
  resourceNames never matches a request without a name, such as create or list) and
  ``appliesTo`` (User by name, Group by membership, ServiceAccount by namespace and name);
- ``pkg/controller/clusterroleaggregation/clusterroleaggregation_controller.go``: a ClusterRole
  with an ``aggregationRule`` holds the rules of every ClusterRole its label selectors match
  (repeated until nothing changes: an aggregated role can itself be aggregated);
- ``pkg/registry/rbac/validation/rule.go`` (``ConfirmNoEscalation``) with
  ``pkg/apis/rbac/validation/policy_comparator.go`` (``Covers``): a user may create a Role, or a
  RoleBinding to it, only when the user's own rules in that namespace cover every rule of it
  (or it holds ``escalate``/``bind``).

A ServiceAccount authenticates as ``system:serviceaccount:<ns>:<name>`` with the groups
``system:serviceaccounts``, ``system:serviceaccounts:<ns>`` and ``system:authenticated``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Subject:
    """Who asks: a user name and its groups."""

    name: str
    groups: tuple[str, ...] = ()

    @staticmethod
    def service_account(namespace: str, name: str) -> Subject:
        return Subject(
            f"system:serviceaccount:{namespace}:{name}",
            ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"),
        )

    @staticmethod
    def user(name: str, *groups: str) -> Subject:
        return Subject(name, (*groups, "system:authenticated"))


@dataclass(frozen=True)
class Rule:
    verbs: tuple[str, ...]
    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    resource_names: tuple[str, ...] = ()
    source: str = ""  # the role it came from, for messages

    @staticmethod
    def of(rule: dict[str, Any], source: str = "") -> Rule:
        return Rule(
            tuple(rule.get("verbs") or ()),
            tuple(rule.get("apiGroups") or ()),
            tuple(rule.get("resources") or ()),
            tuple(rule.get("resourceNames") or ()),
            source,
        )

    def matches(self, verb: str, group: str, resource: str, name: str) -> bool:
        return (
            _verb_matches(self.verbs, verb)
            and _group_matches(self.api_groups, group)
            and _resource_matches(self.resources, resource)
            and _name_matches(self.resource_names, name)
        )


def _verb_matches(verbs: Iterable[str], verb: str) -> bool:
    return any(v in ("*", verb) for v in verbs)


def _group_matches(groups: Iterable[str], group: str) -> bool:
    return any(g in ("*", group) for g in groups)


def _resource_matches(resources: Iterable[str], resource: str) -> bool:
    """``resource`` is ``pods`` or ``pods/log``; ``*/log`` matches any resource's log subresource."""
    sub = resource.split("/", 1)[1] if "/" in resource else None
    for r in resources:
        if r in ("*", resource):
            return True
        if sub is not None and r == f"*/{sub}":
            return True
    return False


def _name_matches(names: Iterable[str], name: str) -> bool:
    names = tuple(names)
    return not names or name in names


def _selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A metav1.LabelSelector: matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist)."""
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


@dataclass
class Rbac:
    """The RBAC objects of a cluster (roles and bindings of any namespace, cluster roles)."""

    objects: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cluster_roles: dict[str, dict[str, Any]] = {}
        self.roles: dict[tuple[str, str], dict[str, Any]] = {}
        self.role_bindings: list[dict[str, Any]] = []
        self.cluster_role_bindings: list[dict[str, Any]] = []
        for obj in self.objects:
            self._add(obj)
        self._aggregate()

    def _add(self, obj: dict[str, Any]) -> None:
        kind, meta = obj.get("kind"), obj.get("metadata") or {}
        if kind == "ClusterRole":
            self.cluster_roles[meta["name"]] = obj
        elif kind == "Role":
            self.roles[(meta["namespace"], meta["name"])] = obj
        elif kind == "RoleBinding":
            self.role_bindings.append(obj)
        elif kind == "ClusterRoleBinding":
            self.cluster_role_bindings.append(obj)

    def _aggregate(self) -> None:
        """The aggregation controller, to a fixed point."""
        self.rules_of_cluster_role: dict[str, list[Rule]] = {
            name: [Rule.of(r, f"ClusterRole/{name}") for r in (cr.get("rules") or [])]
            for name, cr in self.cluster_roles.items()
        }
        changed = True
        while changed:
            changed = False
            for name, cr in self.cluster_roles.items():
                agg = cr.get("aggregationRule")
                if not agg:
                    continue
                rules: list[Rule] = []
                for other_name, other in sorted(self.cluster_roles.items()):
                    if other_name == name:
                        continue
                    labels = (other.get("metadata") or {}).get("labels") or {}
                    if any(_selector_matches(sel, labels) for sel in agg.get("clusterRoleSelectors") or []):
                        for r in self.rules_of_cluster_role[other_name]:
                            if r not in rules:
                                rules.append(r)
                if set(rules) != set(self.rules_of_cluster_role[name]):
                    self.rules_of_cluster_role[name] = rules
                    changed = True

    @staticmethod
    def _applies(binding: dict[str, Any], who: Subject) -> bool:
        ns = (binding.get("metadata") or {}).get("namespace", "")
        for s in binding.get("subjects") or []:
            kind = s.get("kind")
            if kind == "User" and s.get("name") == who.name:
                return True
            if kind == "Group" and s.get("name") in who.groups:
                return True
            sa = f"system:serviceaccount:{s.get('namespace') or ns}:{s.get('name')}"
            if kind == "ServiceAccount" and who.name == sa:
                return True
        return False

    def _role_rules(self, ref: dict[str, Any], namespace: str) -> list[Rule]:
        if ref.get("kind") == "ClusterRole":
            return self.rules_of_cluster_role.get(ref["name"], [])
        role = self.roles.get((namespace, ref["name"]))
        return [Rule.of(r, f"Role/{ref['name']}") for r in (role or {}).get("rules") or []]

    def rules_for(self, who: Subject, namespace: str) -> list[Rule]:
        """Every rule that applies to ``who`` in ``namespace``."""
        rules: list[Rule] = []
        for b in self.cluster_role_bindings:
            if self._applies(b, who):
                rules += self._role_rules(b["roleRef"], "")
        for b in self.role_bindings:
            if (b.get("metadata") or {}).get("namespace") == namespace and self._applies(b, who):
                rules += self._role_rules(b["roleRef"], namespace)
        return rules

    def can(
        self, who: Subject, verb: str, group: str, resource: str, namespace: str, name: str = ""
    ) -> Rule | None:
        """The rule that allows the request, or None (RBAC denies by default)."""
        for rule in self.rules_for(who, namespace):
            if rule.matches(verb, group, resource, name):
                return rule
        return None

    def uncovered(self, who: Subject, namespace: str, rules: Iterable[dict[str, Any]]) -> list[str]:
        """The parts of ``rules`` that ``who`` does not hold in ``namespace`` (escalation check):
        each verb, group, resource and name of a rule must be allowed by one of ``who``'s rules,
        and a rule without resourceNames needs a rule without them."""
        own = self.rules_for(who, namespace)
        missing = []
        for r in rules:
            rule = Rule.of(r)
            names = rule.resource_names or ("",)
            for verb in rule.verbs:
                for group in rule.api_groups:
                    for res in rule.resources:
                        for name in names:
                            if not any(
                                _verb_matches(o.verbs, verb)
                                and _group_matches(o.api_groups, group)
                                and _resource_matches(o.resources, res)
                                and (not o.resource_names or (name and name in o.resource_names))
                                for o in own
                            ):
                                missing.append(f"{verb} {group or 'core'}/{res}{'/' + name if name else ''}")
        return missing
