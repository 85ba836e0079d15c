"""What goes into the image: generated files, package trees, overlays; ELF checks.

Every ELF file must match the board's machine, class, endianness and ABI; a
dynamic one brings its interpreter and DT_NEEDED closure from the cross
toolchain's sysroot.
"""

from __future__ import annotations

import os
import shlex
import stat
from pathlib import Path

from embedbuild.cpio import Entry
from embedbuild.elf import TOOLCHAIN_ELF, ElfIdentity, read_elf
from embedbuild.errors import BoardError, StepError
from embedbuild.model.system import READY_LINE, Overlay, System, service_waves

INIT_TEMPLATE = Path(__file__).parent / "init" / "init.sh.j2"
UDHCPC_SCRIPT = Path(__file__).parent / "init" / "udhcpc.script"


def tree_entries(root: Path) -> list[Entry]:
    """A folder as cpio entries (owned by root, modes as on disk, no times)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames) + sorted(filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                out.append(Entry(rel, "symlink", 0o777, target=os.readlink(full)))
            elif stat.S_ISDIR(st.st_mode):
                out.append(Entry(rel, "dir", st.st_mode & 0o7777))
            elif stat.S_ISREG(st.st_mode):
                out.append(Entry(rel, "file", st.st_mode & 0o7777, data=full.read_bytes()))
    return out


def render_init(system: System, board_name: str) -> str:
    """The /init shell script for a system."""
    import jinja2

    env = jinja2.Environment(keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined, autoescape=False)
    env.filters["shquote"] = shlex.quote
    # A service's environment as sh statements: names are validated, values quoted.
    env.filters["shexports"] = lambda variables: "".join(
        f"export {k}={shlex.quote(v)};" for k, v in variables.items())
    tpl = env.from_string(INIT_TEMPLATE.read_text())
    return tpl.render(board=board_name, hostname=system.hostname, network=system.network,
                      waves=service_waves(system.services),
                      console_shell=system.console_shell, ready_line=READY_LINE)


def generated_entries(system: System, board_name: str) -> list[Entry]:
    """The files embedbuild writes itself: folders, /init, accounts, keys, config."""
    dirs = ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "lib", "etc", "etc/embedbuild",
            "etc/dropbear", "proc", "sys", "dev", "tmp", "run", "var", "var/log", "home"]
    e = [Entry(d, "dir", 0o755) for d in dirs]
    e += [
        Entry("root", "dir", 0o700),
        Entry("dev/console", "char", 0o600, major=5, minor=1),
        Entry("dev/null", "char", 0o666, major=1, minor=3),
        Entry("init", "file", 0o755, data=render_init(system, board_name).encode()),
        Entry("etc/hostname", "file", 0o644, data=f"{system.hostname}\n".encode()),
        # root has no password: '*' can never match, so no network login by password.
        Entry("etc/passwd", "file", 0o644, data=b"root:x:0:0:root:/root:/bin/sh\n"),
        Entry("etc/shadow", "file", 0o600, data=b"root:*:0:0:99999:7:::\n"),
        Entry("etc/group", "file", 0o644, data=b"root:x:0:\ntty:x:5:\n"),
        Entry("etc/shells", "file", 0o644, data=b"/bin/sh\n"),
        Entry("etc/embedbuild/udhcpc.script", "file", 0o755, data=UDHCPC_SCRIPT.read_bytes()),
    ]
    if system.authorized_keys:
        e += [Entry("root/.ssh", "dir", 0o700),
              Entry("root/.ssh/authorized_keys", "file", 0o600,
                    data="".join(k + "\n" for k in system.authorized_keys).encode())]
    return e


def elf_identity(cross_compile: str) -> ElfIdentity:
    """The ELF identity a board's userland must have."""
    try:
        return TOOLCHAIN_ELF[cross_compile]
    except KeyError:
        raise BoardError(f"no ELF identity known for toolchain {cross_compile}",
                         hint=f"known: {', '.join(TOOLCHAIN_ELF)}") from None


def check_and_close(entries: list[Entry], want: ElfIdentity, origin: str,
                    libdirs: list[Path], board: str) -> list[Entry]:
    """Refuse ELF files of the wrong identity; add the libraries dynamic ones need."""
    present = {e.path for e in entries}
    extra: list[Entry] = []
    queue = [(e.path, e.data) for e in entries if e.kind == "file"]
    while queue:
        path, data = queue.pop()
        info = read_elf(data, path)
        if info is None:
            continue
        if info.identity != want:
            raise StepError(f"{origin}: /{path} is {info.identity}, but board {board} "
                            f"runs {want}",
                            hint="build it with the board's toolchain, or remove it")
        wanted = list(info.needed)
        if info.interpreter:
            wanted.append(info.interpreter)
        for lib in wanted:
            dest = lib.lstrip("/") if lib.startswith("/") else f"lib/{lib}"
            if dest in present:
                continue
            found = next((d / Path(lib).name for d in libdirs if (d / Path(lib).name).exists()),
                         None)
            if found is None:
                raise StepError(f"{origin}: /{path} needs {lib}, which the toolchain's sysroot "
                                f"({', '.join(map(str, libdirs))}) does not have",
                                hint="link it statically, or install the library's -cross package")
            blob = found.resolve().read_bytes()
            present.add(dest)
            extra.append(Entry(dest, "file", 0o755, data=blob))
            queue.append((dest, blob))
    return entries + extra


def overlay_entries(overlay: Overlay) -> list[Entry]:
    """An overlay folder, with owners, modes and device nodes from its attributes.

    The attribute file (overlays/NAME.toml) lets a user without root on the
    build host say ``[[entry]] path, mode, uid, gid`` and ``[[node]] path, type
    (char/block/fifo), major, minor, mode``.
    """
    entries = {e.path: e for e in tree_entries(overlay.dir)}
    where = str(overlay.attrs_file)
    for a in overlay.attrs.entry:
        old = entries.get(a.path)
        if old is None:
            raise BoardError(f"entry {a.path!r} is not in overlay {overlay.dir}", where=where,
                             hint="fix the path (relative to the overlay folder) or add the file")
        entries[a.path] = Entry(old.path, old.kind, a.mode if a.mode is not None else old.mode,
                                old.data, old.target, uid=a.uid, gid=a.gid)
    for n in overlay.attrs.node:
        if n.path in entries:
            raise BoardError(f"node {n.path!r} is also a file in the overlay", where=where,
                             hint="remove one of the two")
        entries[n.path] = Entry(n.path, n.type, n.mode, major=n.major, minor=n.minor,
                                uid=n.uid, gid=n.gid)
    return list(entries.values())


class Owners:
    """Who put each path into the image: one path has one owner (folders may be shared,
    with one mode, since the kernel applies the last one it unpacks)."""

    def __init__(self) -> None:
        self._by_path: dict[str, tuple[str, str, int]] = {}

    def claim(self, path: str, kind: str, mode: int, origin: str) -> str | None:
        """Record that ``origin`` puts ``path`` into the image; why it collides, if it does."""
        other = self._by_path.get(path)
        if other is not None:
            if not (kind == "dir" and other[1] == "dir"):
                return f"/{path} comes from both {other[0]} and {origin}"
            if other[2] != mode:
                return (f"folder /{path} is mode {other[2]:o} in {other[0]} but {mode:o} in "
                        f"{origin} (an overlay's NAME.toml can set it)")
        self._by_path[path] = (origin, kind, mode)
        return None


def check_overlays(system: System, board_name: str) -> None:
    """Refuse an overlay file that another overlay or embedbuild's generated files also put
    into the image (packages are checked when their segments are joined)."""
    owners = Owners()
    for e in generated_entries(system, board_name):
        owners.claim(e.path, e.kind, e.mode, "the generated files (init and config)")
    for o in system.overlays:
        for e in overlay_entries(o):
            if why := owners.claim(e.path, e.kind, e.mode, f"overlay {o.name!r}"):
                raise BoardError(why, where=str(o.dir / e.path),
                                 hint="remove it from the overlay, or change the system instead")
