"""The `check` command's service step: connect, unlock the area's keys as other commands do, check.

Kept apart while `service.py` is being split; it belongs with the other commands of `Service`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import errors
from .area import Area, validate_area_name
from .check import CheckReport, check_area
from .i18n import _

if TYPE_CHECKING:
    from .service import Service


def check_remote_area(service: Service, remote: str, area_name: str, read_data: bool = False,
                      structure: bool = False) -> CheckReport:
    """Check area `area_name` on `remote`; without `structure` the keys are unlocked first.

    The keys come the way `history` and `restore` get them: remembered on this computer,
    else from the share password. The area is read without the local cache, so every log
    entry is read from the host again.
    """
    validate_area_name(area_name)
    with service.connect(remote) as session:
        try:
            found = service._existing_area(session, area_name)  # names the areas on a typo
        except errors.AreaCorrupt:
            found = None  # a config that does not load: the check reports it
        area = Area(session, area_name)
        if found is not None:
            area.interrupted = found.interrupted
            if not structure:
                service._unlock(area, _("share password of area {area}").format(area=area_name))
        return check_area(area, read_data=read_data and not structure)
