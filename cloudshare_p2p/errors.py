"""Every error a user can meet, each with its fixed exit code.

Like borg, each class carries its exit code; codes are never reused. The CLI maps
these to `click` exits in one place (`cli/group.py`); the library never calls `sys.exit`.
"""

from __future__ import annotations

from enum import IntEnum

from .i18n import N_, _


class ExitCode(IntEnum):
    """Exit status of the `cloudshare` command (documented in the README and `--help`)."""

    OK = 0  # done
    ERROR = 1  # any other error
    USAGE = 2  # bad command line (click's own code)
    LOCKED = 3  # the data set is locked by another party
    AREA_GONE = 4  # the area's data was deleted from the host (warning case)
    ID_UNUSABLE = 5  # the communication ID cannot be used (login refused / account gone)
    CONFLICT = 6  # your local changes were kept aside; nothing was overwritten
    WRONG_PASSWORD = 7  # the share password does not match
    HOST_KEY = 8  # the host key is unknown or changed
    UNREACHABLE = 9  # the host cannot be reached (network down, timeout)
    LOCAL_DISK = 10  # the local disk refused a write (full, read-only, name too long, file in use)
    AREA_DAMAGED = 11  # the share area failed verification or uses an unknown format
    INTERNAL = 70  # an unexpected internal error (details in the log file named)
    CANNOT_EXECUTE = 126  # `run`: the program exists but cannot be executed
    NOT_FOUND = 127  # `run`: the program does not exist
    INTERRUPTED = 130  # stopped with Ctrl-C (what was left behind is said)


class CloudShareError(Exception):
    """Base of all expected errors; `hint` tells the user what to do next."""

    exit_code: ExitCode = ExitCode.ERROR
    hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    def user_message(self) -> str:
        """The message and its `next:` hint in the user's language.

        Class hints are marked with `N_` and translated here, when shown (an instance hint is
        translated where it is made; `_()` leaves an already translated text as it is).
        """
        text = str(self)
        return _("{message}\n  next: {hint}").format(message=text, hint=_(self.hint)) if self.hint else text


# --- transport -------------------------------------------------------------


class NetworkDown(CloudShareError):
    """The host did not answer (refused, unreachable, timed out)."""

    exit_code = ExitCode.UNREACHABLE
    hint = N_("check the network and the host address, then try again")


class LoginRefused(CloudShareError):
    """The host refused the communication ID (wrong login, account removed)."""

    exit_code = ExitCode.ID_UNUSABLE
    hint = N_("ask the firm whether the communication ID still exists; check its login password or key")


class HostKeyUnknown(CloudShareError):
    """The host presented a key that is not pinned yet."""

    exit_code = ExitCode.HOST_KEY

    def __init__(self, host: str, fingerprint: str, key_type: str = "") -> None:
        self.host, self.fingerprint, self.key_type = host, fingerprint, key_type
        super().__init__(
            _("the host key of {host} is not known: {key_type} {fingerprint}").format(
                host=host, key_type=key_type, fingerprint=fingerprint).replace("  ", " "),
            hint=_("compare the fingerprint with the one the firm gave you, then pass --accept-host-key "
                   "{fingerprint}").format(fingerprint=fingerprint),
        )


class HostKeyChanged(CloudShareError):
    """The host presented a key different from the pinned one: never accepted."""

    exit_code = ExitCode.HOST_KEY

    def __init__(self, host: str, expected: str, got: str) -> None:
        self.host, self.expected, self.got = host, expected, got
        super().__init__(
            _("the host key of {host} CHANGED: pinned {expected}, presented {got}").format(
                host=host, expected=expected, got=got),
            hint=_("someone may be impersonating the host; ask the firm. If the firm really "
            "replaced the key, remove and add the remote again"),
        )


class HostRefused(CloudShareError, PermissionError):
    """The host refused an operation (permission denied on its side). Still a PermissionError,
    so code that handles a refused SFTP operation keeps working."""

    exit_code = ExitCode.ERROR
    hint = N_("ask the firm to check the communication ID's folder on the host")


class TransferError(CloudShareError):
    """A transfer failed or passed its deadline."""

    exit_code = ExitCode.ERROR
    hint = N_("try again; nothing was changed on the host by the failed transfer")


# --- share area -------------------------------------------------------------


class AreaGone(CloudShareError):
    """The area's data is gone from the host (deleted or emptied)."""

    exit_code = ExitCode.AREA_GONE
    hint = N_("the shared data was deleted; stop sharing it with `cloudshare leave NAME`")


class NoSuchArea(CloudShareError):
    """The area name given is not on the host (a typo, most likely)."""

    exit_code = ExitCode.ERROR


class AreaExists(CloudShareError):
    """Creating an area that already exists."""

    exit_code = ExitCode.ERROR
    hint = N_("choose another area name, or receive it with `cloudshare join`")


class AreaCorrupt(CloudShareError):
    """Data on the host failed verification (tampered or damaged)."""

    exit_code = ExitCode.AREA_DAMAGED
    hint = N_("your local copy was left untouched; tell the firm the share area is damaged")


class UnsupportedFormat(CloudShareError):
    """The area uses a format version this program does not know."""

    exit_code = ExitCode.AREA_DAMAGED
    hint = N_("upgrade cloudshare-p2p")


class WrongPassword(CloudShareError):
    """The share password does not match the area's verifier."""

    exit_code = ExitCode.WRONG_PASSWORD
    hint = N_("ask the person who started sharing for the share password and try again")


class LockedByOther(CloudShareError):
    """The data set is locked by another party."""

    exit_code = ExitCode.LOCKED
    hint = N_("wait until they close it (`--wait`), or open it read-only (`--read-only`)")


class Fenced(CloudShareError):
    """Our lease ran out and a newer holder exists: the commit was refused."""

    exit_code = ExitCode.CONFLICT
    hint = N_("your work was kept aside; open the data again and re-apply it")


class Conflict(CloudShareError):
    """Both sides changed the data: the local copy was kept aside."""

    exit_code = ExitCode.CONFLICT
    hint = N_("compare the copy kept aside with the newest version and re-apply your changes")


class StaleBase(Conflict):
    """A commit was built on an older version than the newest: it is never published."""

    def __init__(self, base: int, newest: int) -> None:
        self.base, self.newest = base, newest
        super().__init__(_("your copy was based on version {base}, but version {newest} is the newest; "
                           "nothing was sent").format(base=base, newest=newest))


class UnsafePath(AreaCorrupt):
    """A manifest names a path outside the data set."""


# --- local ------------------------------------------------------------------


class NotRegistered(CloudShareError):
    """No data set or remote of that name in the local registry."""

    exit_code = ExitCode.ERROR
    hint = N_("see `cloudshare status` and `cloudshare remote list`")


class InvalidName(CloudShareError):
    """A name given on the command line is not acceptable (a usage error)."""

    exit_code = ExitCode.USAGE


class LocalDiskError(CloudShareError):
    """The local disk refused a write: full, read-only, name too long, or a file in use."""

    exit_code = ExitCode.LOCAL_DISK
    hint = N_("free some space or fix the folder's permissions, then try again; nothing was lost")


class FileInUse(LocalDiskError):
    """The newest version could not be put in place: another program holds the file open."""

    hint = N_("close the accounting program, then open again (what was received is kept)")


class Busy(CloudShareError):
    """Another cloudshare command is working on the same data set on this computer."""

    exit_code = ExitCode.LOCKED
    hint = N_("wait for the other cloudshare command to finish, then try again")


class Interrupted(CloudShareError):
    """The user pressed Ctrl-C; the message says what was left behind."""

    exit_code = ExitCode.INTERRUPTED


class ProgramNotFound(CloudShareError):
    """`run`: the program does not exist (like a shell: exit 127)."""

    exit_code = ExitCode.NOT_FOUND
    hint = N_("check the program's name or give its full path")


class ProgramNotExecutable(CloudShareError):
    """`run`: the program exists but cannot be executed (like a shell: exit 126)."""

    exit_code = ExitCode.CANNOT_EXECUTE
    hint = N_("check that it is a program and that you may run it")


class Declined(CloudShareError):
    """The person answered no (or could not be asked): nothing was changed."""


class InputNeeded(CloudShareError):
    """A password or answer is needed and there is no terminal to ask."""


class LocalPathMissing(CloudShareError):
    """A local file or folder named on the command line (or registered) does not exist."""


class AlreadyRegistered(CloudShareError):
    """A name or a local path is already registered on this computer."""


class BadUrl(CloudShareError):
    """A remote URL that cannot be used."""

    exit_code = ExitCode.USAGE


class NoSuchVersion(CloudShareError):
    """`restore` was given a version the area does not have."""


class VersionPruned(NoSuchVersion):
    """A version the retention policy removed: its data may be gone from the host."""

    def __init__(self, version: int) -> None:
        super().__init__(_("version {version} was pruned by the retention policy").format(version=version))
        self.version = version


class PruneNeedsFormat2(CloudShareError):
    """`prune` on a version-1 area: that format keeps everything (the next close upgrades it)."""


class AreaEmpty(CloudShareError):
    """The area holds no version yet (its set-up has not finished)."""


class KeepsChanging(CloudShareError):
    """The lock or the log moved on every attempt (heavy contention): try again."""


class KeysMissing(CloudShareError):
    """The area's keys were needed before the share password was given (a bug if seen)."""


class HostFolderProblem(CloudShareError):
    """A folder on the host is missing, is a file, or cannot be read."""


class InvalidState(CloudShareError):
    """The command is not allowed in the data set's current state."""

    exit_code = ExitCode.ERROR
