"""The systemd unit that a container says runs it: the field CONTAINER_SYSTEMD_UNIT. Pure.

A container started by a unit names that unit in a label: Podman's own `PODMAN_SYSTEMD_UNIT`
(quadlet's `.container` units and `podman generate systemd --new` set it), or the bridge's
`journald-bridge.unit` (`docker run -l journald-bridge.unit=%n ...` in a unit's ExecStart,
where systemd expands `%n` to the unit's name). Only engine containers are looked at.

Invariants (a label is its container creator's to set):
- The label is a claim, not proof. Its field is CONTAINER_SYSTEMD_UNIT, in the bridge's own
  CONTAINER_ namespace; never `_SYSTEMD_UNIT`, `UNIT` or `OBJECT_SYSTEMD_UNIT`, which journald
  sets or `journalctl -u` trusts, and never a field the journal read-back matches.
- Only a valid unit name becomes the field: systemd's own rules (at most 255 characters of
  `A-Za-z0-9:_.\\-`, an optional `@instance`, a unit type suffix). Any other value is refused
  with a reason, and the container is forwarded without the field.
- `journald-bridge.unit` wins over `PODMAN_SYSTEMD_UNIT` where both are set: it is the one the
  user wrote for the bridge.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

UNIT_FIELD = "CONTAINER_SYSTEMD_UNIT"
BRIDGE_UNIT_LABEL = "journald-bridge.unit"
PODMAN_UNIT_LABEL = "PODMAN_SYSTEMD_UNIT"
UNIT_LABELS = (BRIDGE_UNIT_LABEL, PODMAN_UNIT_LABEL)  # in the order they are looked at

# systemd's UNIT_NAME_MAX is 256 with the terminating NUL.
MAX_UNIT_NAME = 255
_TYPES = (
    "service",
    "socket",
    "target",
    "device",
    "mount",
    "automount",
    "swap",
    "timer",
    "path",
    "slice",
    "scope",
)
# unit_name_is_valid(): a non-empty prefix, an optional non-empty instance, a known type.
_VALID = re.compile(r"[A-Za-z0-9:_.\\-]+(?:@[A-Za-z0-9:_.\\-]+)?\.(?:" + "|".join(_TYPES) + ")")


@dataclass(frozen=True)
class UnitClaim:
    """What a container's labels say of its unit: `name` when valid, else why not."""

    label: str = ""  # the label the claim came from; "" when the container has none
    name: str = ""  # a valid unit name, or ""
    refused: str = ""  # why the label's value is not used; "" when it is (or there is none)


NO_UNIT = UnitClaim()


def unit_claim(labels: Mapping[str, str]) -> UnitClaim:
    """The unit a container's labels name, checked; never raises."""
    for label in UNIT_LABELS:
        value = labels.get(label)
        if value is None:
            continue
        value = str(value)
        if len(value) > MAX_UNIT_NAME:
            return UnitClaim(label, refused=f"longer than {MAX_UNIT_NAME} characters")
        if not _VALID.fullmatch(value):
            return UnitClaim(label, refused=f"{value!r} is not a systemd unit name")
        return UnitClaim(label, name=value)
    return NO_UNIT
