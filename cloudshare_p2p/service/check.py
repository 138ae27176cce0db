"""The `check` command's step: connect, load the area's keys as other commands do, check."""

from __future__ import annotations

from .. import errors
from ..area import Area, validate_area_name
from ..check import CheckReport, check_area
from ..i18n import _
from .base import ServiceBase


class CheckCommand(ServiceBase):
    """`cloudshare check REMOTE AREA`: verify an area on the host (cloudshare_p2p/check/)."""

    def check_area(self, remote: str, area_name: str, read_data: bool = False,
                   structure: bool = False) -> CheckReport:
        """Check area `area_name` on `remote`; without `structure` the keys are loaded first.

        The keys come the way `history` and `restore` get them: remembered on this computer,
        else from the share password. The area is read without the local cache, so every log
        entry is read from the host again.
        """
        validate_area_name(area_name)
        with self.connect(remote) as session:
            try:
                found: Area | None = self._existing_area(session, area_name)  # names areas on a typo
            except errors.AreaCorrupt:
                found = None  # a config that does not load: the check reports it
            area = Area(session, area_name)
            if found is not None:
                area.interrupted = found.interrupted
                if not structure:
                    self._load_keys(area, _("share password of area {area}").format(area=area_name))
            return check_area(area, read_data=read_data and not structure)
