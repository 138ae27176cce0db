"""The areas under a remote's base folder, one summary row each (the area selection screen)."""

from __future__ import annotations

from .. import errors
from ..i18n import _
from ..transport import RemoteFiles
from .lifecycle import Area
from .model import AreaSummary
from .records import AREA_NAME


def list_areas(session: RemoteFiles) -> list[AreaSummary]:
    """Every area under the remote's base folder, with its newest version and lock."""
    base = session.path() if session.endpoint.base else "."
    try:
        names = sorted(session.listdir(base))
    except FileNotFoundError:
        raise errors.HostFolderProblem(_("the folder {base} does not exist on the host").format(base=base),
                                     hint=_("check the remote's URL path")) from None
    out = []
    for name in names:
        if not AREA_NAME.fullmatch(name):
            continue
        st = session.stat(session.path(name))
        if st is None or not st.is_dir:
            continue
        area = Area(session, name)
        try:
            config = area.load()
            out.append(AreaSummary(name, config.get("dataset"), area.newest(), area.lock_info()))
        except errors.CloudShareError as exc:
            out.append(AreaSummary(name, None, None, None, problem=str(exc)))
    return out
