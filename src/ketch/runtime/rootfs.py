"""Turning the bundle's rootfs into the container's ``/``: mounts, devices, pivot_root.

Runs in the init, inside its new mount namespace, in this order:

1. :func:`prepare_root`: make every mount a slave (or what linux.rootfsPropagation sets)
   so nothing below reaches the host, then bind the rootfs onto itself, because
   pivot_root needs a mount point.
2. :func:`mount_all`: the config's mounts, with ``cgroup`` turned into binds of the
   container's own cgroup directories.
3. :func:`create_devices`: the default device nodes and the /dev symlinks.
4. :func:`pivot_into`: pivot_root and detach the old root.
5. :func:`finish_root`: read-only root, sysctls, masked and read-only paths.
"""

from __future__ import annotations

import os
import stat

from ketch.errors import InvalidArgument, SystemFailure
from ketch.linux import syscalls as sc
from ketch.runtime import inroot, mounts
from ketch.runtime.cgroups import CgroupManager
from ketch.runtime.config import Device, Mount, Spec
from ketch.runtime.paths import is_within, unescape_mountinfo

DEFAULT_DEVICES = [
    Device("/dev/null", "c", 1, 3, 0o666, 0, 0),
    Device("/dev/zero", "c", 1, 5, 0o666, 0, 0),
    Device("/dev/full", "c", 1, 7, 0o666, 0, 0),
    Device("/dev/random", "c", 1, 8, 0o666, 0, 0),
    Device("/dev/urandom", "c", 1, 9, 0o666, 0, 0),
    Device("/dev/tty", "c", 5, 0, 0o666, 0, 0),
]

DEV_SYMLINKS = [
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
]

_PROPAGATION = {
    None: sc.MS_SLAVE | sc.MS_REC,
    "slave": sc.MS_SLAVE,
    "rslave": sc.MS_SLAVE | sc.MS_REC,
    "private": sc.MS_PRIVATE,
    "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "shared": sc.MS_SHARED,
    "rshared": sc.MS_SHARED | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE,
}

_DEVICE_TYPES = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}

# sysctl prefixes that belong to a namespace, with that namespace. Any other sysctl is
# global, and writing it from a container would change the host.
_NAMESPACED_SYSCTLS = [
    ("kernel.msgmax", "ipc"),
    ("kernel.msgmnb", "ipc"),
    ("kernel.msgmni", "ipc"),
    ("kernel.sem", "ipc"),
    ("kernel.shmall", "ipc"),
    ("kernel.shmmax", "ipc"),
    ("kernel.shmmni", "ipc"),
    ("kernel.shm_rmid_forced", "ipc"),
    ("fs.mqueue.", "ipc"),
    ("kernel.hostname", "uts"),
    ("kernel.domainname", "uts"),
    ("net.", "network"),
]


def prepare_root(spec: Spec) -> None:
    sc.mount(None, "/", None, _PROPAGATION[spec.rootfs_propagation])
    # pivot_root fails with EINVAL when the new root's parent mount is shared, which a
    # "shared" or "rshared" linux.rootfsPropagation makes it; finish_root applies the
    # requested propagation to the new / after the pivot instead.
    mounts = _mountinfo()
    parent = _mount_point_of(spec.rootfs, mounts)
    if _is_shared(parent, mounts):
        sc.mount(None, parent, None, sc.MS_PRIVATE)
    sc.mount(spec.rootfs, spec.rootfs, None, sc.MS_BIND | sc.MS_REC)


# Mount points are kept as strings, not Path objects, because the init parses mountinfo on
# every create. Building a Path for each line and its parents took most of prepare_root
# under cProfile.


def _mountinfo() -> list[tuple[str, list[str]]]:
    """Return (mount point, optional fields) for each mount of this mount namespace."""
    entries = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields = line.split(" - ", 1)[0].split()
            entries.append((unescape_mountinfo(fields[4]), fields[6:]))
    return entries


def _mount_point_of(path: str, mounts: list[tuple[str, list[str]]]) -> str:
    """Return the mount point of the mount in ``mounts`` that contains the absolute,
    normalized ``path``."""
    points = [point for point, _ in mounts if is_within(path, point)]
    # The candidates all contain path, so the longest is the innermost.
    return max(points, key=len)


def _is_shared(mount_point: str, mounts: list[tuple[str, list[str]]]) -> bool:
    tags = [tags for point, tags in mounts if point == mount_point]
    return any(tag.startswith("shared:") for tag in tags[-1]) if tags else False


def mount_all(root_fd: int, spec: Spec, cgroups: CgroupManager) -> None:
    for index, entry in enumerate(spec.mounts):
        where = f"mounts[{index}]"
        if entry.type == "cgroup":
            _mount_cgroups(root_fd, entry, cgroups, where)
        else:
            mounts.mount_entry(root_fd, entry, where)


def _mount_cgroups(root_fd: int, entry: Mount, cgroups: CgroupManager, where: str) -> None:
    """Show the container's own cgroup directories at the destination.

    The destination becomes a tmpfs with one bind mount per hierarchy (cgroup v1), or a
    bind mount of the container's cgroup (v2), so the container reads its own limits and
    usage, not the host's tree.
    """
    options = mounts.parse_options(entry.options)
    read_only = bool(options.flags & sc.MS_RDONLY)
    flags = options.flags & ~(sc.MS_RDONLY | sc.MS_BIND | sc.MS_REC | sc.MS_REMOUNT)
    sources = cgroups.bind_sources()
    if cgroups.version == 2:
        bind = Mount(entry.destination, "bind", str(sources[0][1]), ["rbind"])
        mounts.mount_entry(root_fd, bind, where)
        if read_only:
            mounts.remount(root_fd, entry.destination, flags | sc.MS_RDONLY)
        return
    tmpfs = Mount(entry.destination, "tmpfs", "tmpfs", ["mode=755"])
    mounts.mount_entry(root_fd, tmpfs, where)
    for name, directory in sources:
        destination = f"{entry.destination}/{name}"
        mounts.mount_entry(root_fd, Mount(destination, "bind", str(directory), ["rbind"]), where)
        if read_only:
            mounts.remount(root_fd, destination, flags | sc.MS_RDONLY)
        if "," in name:
            _link_comounted(root_fd, entry.destination, name)
    if read_only:
        mounts.remount(root_fd, entry.destination, flags | sc.MS_RDONLY)


def _link_comounted(root_fd: int, destination: str, name: str) -> None:
    # "cpu,cpuacct" is also reachable as "cpu" and "cpuacct", as on the host.
    parent = inroot.open_in_root(root_fd, destination, os.O_PATH | os.O_DIRECTORY)
    try:
        for alias in name.split(","):
            try:
                os.symlink(name, alias, dir_fd=parent)
            except FileExistsError:
                pass
    finally:
        os.close(parent)


def create_devices(root_fd: int, spec: Spec) -> None:
    """Create the default device nodes, the config's devices and the /dev symlinks.

    Skipped when /dev is a bind mount from the host, which brings its own nodes.
    """
    if any(m.destination.rstrip("/") == "/dev" and _is_bind(m) for m in spec.mounts):
        return
    for device in DEFAULT_DEVICES + spec.devices:
        _make_device(root_fd, device)
    for target, link in DEV_SYMLINKS:
        _make_symlink(root_fd, target, link)
    if any(m.destination.rstrip("/") == "/dev/pts" for m in spec.mounts):
        _make_symlink(root_fd, "pts/ptmx", "/dev/ptmx")


def _is_bind(entry: Mount) -> bool:
    return entry.type == "bind" or mounts.parse_options(entry.options).is_bind


def _make_device(root_fd: int, device: Device) -> None:
    parent_path, name = os.path.split(device.path)
    parent = inroot.make_directories(root_fd, parent_path)
    try:
        mode = _DEVICE_TYPES[device.type] | device.file_mode
        number = os.makedev(device.major, device.minor) if device.type != "p" else 0
        try:
            os.mknod(name, mode, number, dir_fd=parent)
        except FileExistsError:
            os.unlink(name, dir_fd=parent)
            os.mknod(name, mode, number, dir_fd=parent)
        except PermissionError:
            # In a user namespace mknod is not allowed; the host's node is bound instead.
            _bind_host_device(parent, name, device)
            return
        os.chown(name, device.uid, device.gid, dir_fd=parent, follow_symlinks=False)
    except OSError as error:
        raise SystemFailure(f"cannot create device {device.path}: {error.strerror}") from None
    finally:
        os.close(parent)


def _bind_host_device(parent: int, name: str, device: Device) -> None:
    """Bind-mount the host's node at device.path onto an empty file in the rootfs."""
    try:
        info = os.stat(device.path)
    except FileNotFoundError:
        raise SystemFailure(
            f"cannot create device {device.path} in a user namespace: the host has no "
            "node at that path to bind"
        ) from None
    if (os.major(info.st_rdev), os.minor(info.st_rdev)) != (device.major, device.minor):
        raise SystemFailure(
            f"cannot create device {device.path} in a user namespace: the host's node "
            f"there is {os.major(info.st_rdev)}:{os.minor(info.st_rdev)}, not "
            f"{device.major}:{device.minor}"
        )
    try:
        os.close(
            os.open(
                name,
                os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_WRONLY | os.O_CLOEXEC,
                0o644,
                dir_fd=parent,
            )
        )
    except FileExistsError:
        pass
    target = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    try:
        sc.mount(device.path, inroot.fd_path(target), None, sc.MS_BIND)
    finally:
        os.close(target)


def _make_symlink(root_fd: int, target: str, link: str) -> None:
    parent_path, name = os.path.split(link)
    parent = inroot.make_directories(root_fd, parent_path)
    try:
        os.symlink(target, name, dir_fd=parent)
    except FileExistsError:
        pass
    finally:
        os.close(parent)


def pivot_into(rootfs: str) -> None:
    """Make ``rootfs`` the root and detach the old root, leaving no path back to the host."""
    old_root = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    new_root = os.open(rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fchdir(new_root)
        # pivot_root(".", ".") stacks the old root on top of the new one, so no put_old
        # directory is needed inside the rootfs.
        sc.pivot_root(".", ".")
        os.fchdir(old_root)
        # Slave first, so that detaching the old root does not propagate to the host.
        sc.mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC)
        sc.umount(".", sc.MNT_DETACH)
        os.chdir("/")
    finally:
        os.close(old_root)
        os.close(new_root)


def move_into(rootfs: str) -> None:
    """Move the rootfs mount onto / and chroot into it: ``--no-pivot``.

    For a host whose root is the initial ramdisk, where pivot_root(2) fails with EINVAL.
    The old root stays mounted underneath in this mount namespace, so a process with
    CAP_SYS_CHROOT could reach it; pivot_root is the default for that reason.
    """
    os.chdir(rootfs)
    sc.mount(".", "/", None, sc.MS_MOVE)
    os.chroot(".")
    os.chdir("/")


def finish_root(spec: Spec) -> None:
    """Apply what must wait until after pivot_root; runs with ``/`` as the rootfs."""
    if spec.rootfs_propagation in ("shared", "rshared"):
        sc.mount(None, "/", None, _PROPAGATION[spec.rootfs_propagation])
    if spec.root_readonly:
        sc.mount(None, "/", None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_REC)
    write_sysctls(spec)
    root_fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for path in spec.readonly_paths:
            _make_read_only(root_fd, path)
        for path in spec.masked_paths:
            _mask(root_fd, path)
    finally:
        os.close(root_fd)


def check_sysctls(spec: Spec) -> None:
    """Reject sysctls that are not namespaced or whose namespace the container lacks."""
    for key in spec.sysctl:
        if ".." in key or "/" in key or not key:
            raise InvalidArgument(f"invalid config.json: linux.sysctl: invalid key {key!r}")
        namespace = next((ns for prefix, ns in _NAMESPACED_SYSCTLS if key.startswith(prefix)), None)
        if namespace is None:
            raise InvalidArgument(
                f"invalid config.json: linux.sysctl: {key} is not namespaced, so setting it "
                "would change the host"
            )
        declared = spec.namespace(namespace)
        if declared is None:
            raise InvalidArgument(
                f"invalid config.json: linux.sysctl: {key} needs a {namespace} namespace"
            )


def write_sysctls(spec: Spec) -> None:
    for key, value in spec.sysctl.items():
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            with open(path, "w") as handle:
                handle.write(value)
        except OSError as error:
            raise SystemFailure(f"cannot set sysctl {key}={value}: {error.strerror}") from None


def _make_read_only(root_fd: int, path: str) -> None:
    try:
        target = inroot.open_in_root(root_fd, path)
    except FileNotFoundError:
        return
    try:
        fd_path = inroot.fd_path(target)
        sc.mount(fd_path, fd_path, None, sc.MS_BIND | sc.MS_REC)
        mounts.remount(root_fd, path, sc.MS_RDONLY | sc.MS_REC)
    except OSError as error:
        raise SystemFailure(f"cannot make {path} read-only: {error.strerror}") from None
    finally:
        os.close(target)


def _mask(root_fd: int, path: str) -> None:
    """Hide ``path``: /dev/null over a file, an empty read-only tmpfs over a directory."""
    try:
        target = inroot.open_in_root(root_fd, path)
    except FileNotFoundError:
        return
    try:
        fd_path = inroot.fd_path(target)
        if inroot.is_directory(target):
            sc.mount("tmpfs", fd_path, "tmpfs", sc.MS_RDONLY, None)
        else:
            sc.mount("/dev/null", fd_path, None, sc.MS_BIND)
    except OSError as error:
        raise SystemFailure(f"cannot mask {path}: {error.strerror}") from None
    finally:
        os.close(target)
