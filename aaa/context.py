"""What the RADIUS handlers work with, replaced as a whole on reload (requests in flight keep theirs)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from aaa.attributes import Attrs
from aaa.clients import ClientTable
from aaa.dictionary import AttributeDef, Dictionary
from aaa.settings import RadiusSettings
from balance.service import ChargingService

IDENTITY_KIND = "radius_user"  # the provisioning CLI's --radius-user identities


@dataclass(frozen=True, slots=True)
class RadiusContext:
    settings: RadiusSettings
    dictionary: Dictionary
    attrs: Attrs
    clients: ClientTable
    charging: ChargingService
    clock: Callable[[], datetime]
    # (NAS profile, plan) -> the plan's limits as reply attributes, built on first use (aaa.access)
    plan_limits: dict[tuple[str, str], tuple[tuple[int, bytes], ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def attribute(self, name: str) -> AttributeDef:
        return self.dictionary.attribute(name)
