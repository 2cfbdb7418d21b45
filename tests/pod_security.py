"""The Pod Security Standards' ``baseline`` and ``restricted`` levels, checked offline.

A re-implementation, for tests, of the controls documented in kubernetes/website
``content/en/docs/concepts/security/pod-security-standards.md`` (the "latest" version of the
levels, which Pod Security Admission enforces for ``pod-security.kubernetes.io/enforce: <level>``
with no version label). :func:`violations` returns one line per broken control, naming the field,
so that a failing test says what to change. Windows-only fields are checked as documented
(hostProcess); the restricted controls that exempt Windows pods are checked as for Linux.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

LEVELS = ("privileged", "baseline", "restricted")

BASELINE_CAPABILITIES = {
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def _containers(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(kind) or []:
            yield f"{kind}[{c.get('name', '?')}]", c


def _baseline(spec: dict[str, Any], annotations: dict[str, str]) -> list[str]:
    out = []
    psc = spec.get("securityContext") or {}
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        out.append("HostProcess: spec.securityContext.windowsOptions.hostProcess must be unset or false")
    for f in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(f):
            out.append(f"Host Namespaces: spec.{f} must be unset or false")
    for v in spec.get("volumes") or []:
        if "hostPath" in v:
            out.append(f"HostPath Volumes: spec.volumes[{v.get('name')}].hostPath is forbidden")
    for name, c in _containers(spec):
        sc = c.get("securityContext") or {}
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            out.append(
                f"HostProcess: {name}.securityContext.windowsOptions.hostProcess must be unset or false"
            )
        if sc.get("privileged"):
            out.append(f"Privileged Containers: {name}.securityContext.privileged must be unset or false")
        added = set((sc.get("capabilities") or {}).get("add") or []) - BASELINE_CAPABILITIES
        if added:
            out.append(f"Capabilities: {name} adds {sorted(added)}, beyond the baseline set")
        for p in c.get("ports") or []:
            if p.get("hostPort"):
                out.append(f"Host Ports: {name}.ports[].hostPort must be unset or 0")
        if sc.get("procMount") not in (None, "Default"):
            out.append(f"/proc Mount Type: {name}.securityContext.procMount must be unset or Default")
    for where, sc in [("spec.securityContext", psc)] + [
        (f"{n}.securityContext", c.get("securityContext") or {}) for n, c in _containers(spec)
    ]:
        app = (sc.get("appArmorProfile") or {}).get("type")
        if app not in (None, "RuntimeDefault", "Localhost"):
            out.append(f"AppArmor: {where}.appArmorProfile.type must be RuntimeDefault or Localhost")
        se = sc.get("seLinuxOptions") or {}
        if se.get("type", "") not in SELINUX_TYPES:
            out.append(f"SELinux: {where}.seLinuxOptions.type {se['type']!r} is not allowed")
        if se.get("user") or se.get("role"):
            out.append(f"SELinux: {where}.seLinuxOptions.user and .role must be unset")
        if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
            out.append(f"Seccomp: {where}.seccompProfile.type must not be Unconfined")
    for key, value in annotations.items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
            value == "runtime/default" or value.startswith("localhost/")
        ):
            out.append(f"AppArmor: annotation {key}={value} is not allowed")
    for s in psc.get("sysctls") or []:
        if s.get("name") not in SAFE_SYSCTLS:
            out.append(f"Sysctls: spec.securityContext.sysctls {s.get('name')} is not in the safe set")
    return out


def _restricted(spec: dict[str, Any]) -> list[str]:
    out = []
    psc = spec.get("securityContext") or {}
    for v in spec.get("volumes") or []:
        kinds = set(v) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            out.append(f"Volume Types: spec.volumes[{v.get('name')}] is a {sorted(kinds)} volume")
    pod_non_root = psc.get("runAsNonRoot") is True
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type") in ("RuntimeDefault", "Localhost")
    if psc.get("runAsUser") == 0:
        out.append("Running as Non-root user: spec.securityContext.runAsUser must not be 0")
    for name, c in _containers(spec):
        sc = c.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"Privilege Escalation: {name}.securityContext.allowPrivilegeEscalation must be false")
        if sc.get("runAsNonRoot") is False or (sc.get("runAsNonRoot") is not True and not pod_non_root):
            out.append(
                f"Running as Non-root: {name}.securityContext.runAsNonRoot (or the pod's) must be true"
            )
        if sc.get("runAsUser") == 0:
            out.append(f"Running as Non-root user: {name}.securityContext.runAsUser must not be 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost") and not (seccomp is None and pod_seccomp):
            out.append(
                f"Seccomp: {name}.securityContext.seccompProfile.type (or the pod's) must be RuntimeDefault or Localhost"
            )
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"Capabilities: {name}.securityContext.capabilities.drop must include ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"Capabilities: {name} may add only NET_BIND_SERVICE")
    return out


def violations(spec: dict[str, Any], level: str, annotations: dict[str, str] | None = None) -> list[str]:
    """The controls of ``level`` that the pod spec ``spec`` breaks (empty: it is admitted)."""
    if level not in LEVELS:
        raise ValueError(f"unknown Pod Security level {level!r}")
    if level == "privileged":
        return []
    out = _baseline(spec, annotations or {})
    if level == "restricted":
        out += _restricted(spec)
    return out


def enforced_level(namespace_labels: dict[str, str]) -> str:
    """The level Pod Security Admission enforces in a namespace with these labels (privileged
    when unlabelled, unless the cluster's admission configuration says otherwise)."""
    return namespace_labels.get("pod-security.kubernetes.io/enforce", "privileged")
