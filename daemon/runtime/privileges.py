"""Dropping root: switch to the configured user, keeping only the capabilities capture needs.

Capture sockets are opened by the capture threads whenever an interface comes up (again),
so the daemon cannot simply open them and then give up every privilege: it switches user
*before* it starts any capture thread, with ``PR_SET_KEEPCAPS``, and then sets its
capabilities to exactly CAP_NET_RAW and CAP_NET_ADMIN (effective and permitted; nothing
inheritable, nothing ambient). Threads started afterwards inherit that set. Under the
shipped systemd unit the daemon already starts as its user with those two ambient
capabilities, and nothing here runs.
"""
from __future__ import annotations

import ctypes
import logging
import os
import pwd
import grp

log = logging.getLogger("malsensor.main")

PR_SET_KEEPCAPS = 8
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
KEEP = (CAP_NET_ADMIN, CAP_NET_RAW)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def set_capabilities(caps: tuple[int, ...]) -> None:
    """Set this thread's effective and permitted capabilities to ``caps`` (capset(2))."""
    mask = 0
    for c in caps:
        mask |= 1 << c
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    data[0].effective = data[0].permitted = mask & 0xFFFFFFFF
    data[1].effective = data[1].permitted = mask >> 32
    if _libc().capset(ctypes.byref(hdr), data) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"capset: {os.strerror(e)}")


def effective_capabilities(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


class PrivilegeError(Exception):
    pass


def drop_privileges(user: str, group: str = "") -> str | None:
    """Become ``user`` (and ``group``) if running as root. Returns what was done, for the log;
    None when nothing was done. Raises PrivilegeError with a clear message on failure."""
    if not user:
        return None
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid()).pw_name
        if me != user:
            log.info("not started as root: running as %s, not switching to %s", me, user)
        return None
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(f"[service] user {user!r} does not exist (create it, e.g. with "
                             f"contrib/sysusers.d/malsensor.conf, or set user = \"\")") from None
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise PrivilegeError(f"[service] group {group!r} does not exist") from None
    else:
        gid = pw.pw_gid
    if pw.pw_uid == 0:
        return None
    libc = _libc()
    if libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0:
        e = ctypes.get_errno()
        raise PrivilegeError(f"prctl(PR_SET_KEEPCAPS): {os.strerror(e)}")
    try:
        os.setgroups([])
        os.initgroups(pw.pw_name, gid)
        os.setgid(gid)
        os.setuid(pw.pw_uid)
        set_capabilities(KEEP)
    except OSError as e:
        raise PrivilegeError(f"switching to user {user}: {e}") from None
    finally:
        libc.prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0)
    os.environ["HOME"] = pw.pw_dir
    os.environ["USER"] = os.environ["LOGNAME"] = pw.pw_name
    return f"switched to user {pw.pw_name} (uid {pw.pw_uid}, gid {gid}), keeping CAP_NET_RAW and CAP_NET_ADMIN"
