"""Build the one image, and run what was built, with or without a Docker engine.

`just image` builds it with Docker when an engine answers `docker info`, else with Podman
(`--isolation=chroot`: no daemon, no cgroups). `just test-image` (tests/image) builds it with
Podman on a base made here from Debian's packages (debootstrap), then runs the image's file
system the way a container runtime with a read-only root would: as the image's user, over a
read-only bind mount, with proc, dev and a tmpfs /tmp, in a mount namespace of its own.

    python -m tests.support.image build [--tag T] [--base IMAGE | --local-base]
    python -m tests.support.image run [--tag T] [--bind HOST:/tmp/PATH[:ro]] -- ARGS (of introspect)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TAG = "introspect:0.1.0"
LOCAL_BASE = "localhost/introspect-base:bookworm"
BASE_CACHE = ROOT / ".cache" / "image-base"  # the debootstrap base as a tarball: a second run imports it
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# the host's settings pip needs inside the build to reach the package index (when set here)
PIP_ENVIRONMENT = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_DEFAULT_TIMEOUT")
PROXY_ENVIRONMENT = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


class ImageError(RuntimeError):
    """What is missing or went wrong, in one line."""


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), text=True, capture_output=True, check=False)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-20:]
        raise ImageError(f"`{shlex.join(argv)}` exited {result.returncode}:\n" + "\n".join(tail))
    return result


def docker_engine() -> bool:
    """Whether a Docker engine answers (a docker client alone is not enough)."""
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


def require_podman(*, debootstrap: bool = False) -> None:
    tools = ["podman", *(["debootstrap"] if debootstrap else [])]
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise ImageError(f"{' and '.join(missing)} not found: apt-get install -y {' '.join(tools)}")
    if os.geteuid() != 0:
        raise ImageError("needs root: debootstrap, `podman image mount`, mount and chroot do (run as root or in CI)")


# -- the base: Debian's python3, from the mirror the machine's apt already uses --------------------


def debian_mirror(apt: Path = Path("/etc/apt")) -> tuple[str, str]:
    """(mirror URI, suite) of the first Debian release source in apt's sources (deb822 or one-line)."""
    files = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]
    files += sorted((apt / "sources.list.d").glob("*.sources"))
    for file in files:
        if not file.is_file():
            continue
        text = file.read_text(encoding="utf-8")
        if file.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.MULTILINE))
                if "deb" in fields.get("Types", "").split() and fields.get("Enabled", "yes") != "no":
                    for uri in fields.get("URIs", "").split():
                        for suite in fields.get("Suites", "").split():
                            if _release(uri, suite):
                                return uri, suite
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line).split()  # drop [arch=... signed-by=...]
                if len(words) >= 3 and words[0] == "deb" and _release(words[1], words[2]):
                    return words[1], words[2]
    raise ImageError(f"no Debian release source (deb .../debian <suite>) in {apt}/sources.list*")


def _release(uri: str, suite: str) -> bool:
    """A Debian release itself: not security, not updates or backports, not another vendor's repository."""
    return uri.rstrip("/").endswith("/debian") and "-" not in suite


def local_base(*, log: bool = True) -> str:
    """The base image made from Debian's packages (debootstrap minbase with python3 and venv),
    imported into Podman; its root file system is kept in .cache/image-base for the next run."""
    require_podman(debootstrap=True)
    if subprocess.run(["podman", "image", "exists", LOCAL_BASE], check=False).returncode == 0:
        return LOCAL_BASE
    mirror, suite = debian_mirror()
    tarball = BASE_CACHE / f"{suite}.tar"
    if not tarball.is_file():
        rootfs = BASE_CACHE / f"{suite}.rootfs"
        shutil.rmtree(rootfs, ignore_errors=True)
        rootfs.parent.mkdir(parents=True, exist_ok=True)
        _say(log, f"debootstrap {suite} from {mirror} (about 1.5 min)")
        debootstrap = ["debootstrap", "--variant=minbase", "--include=python3,python3-venv", suite, str(rootfs), mirror]
        _run(debootstrap)
        _slim(rootfs)
        partial = tarball.with_suffix(".tar.partial")
        _run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."])
        partial.rename(tarball)
        shutil.rmtree(rootfs)
    _say(log, f"podman import {tarball.relative_to(ROOT)} as {LOCAL_BASE}")
    _run(["podman", "import", "--change", "CMD /bin/bash", str(tarball), LOCAL_BASE])
    return LOCAL_BASE


def _slim(rootfs: Path) -> None:
    """What Debian's slim images (python:3.11-slim's base) leave out: apt's downloads and lists,
    manuals, info pages, translations, and every document but the copyright files."""
    for folder in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/man", "usr/share/info"):
        shutil.rmtree(rootfs / folder, ignore_errors=True)
    shutil.rmtree(rootfs / "usr" / "share" / "locale", ignore_errors=True)
    for path in (rootfs / "usr" / "share" / "doc").rglob("*"):
        if (path.is_file() or path.is_symlink()) and path.name != "copyright":
            path.unlink()


# -- the build ----------------------------------------------------------------------------------


def build(tag: str = TAG, base: str | None = None, *, log: bool = True) -> str:
    """`docker build` when an engine answers, else `podman build --isolation=chroot`; `base`
    (the Dockerfile's BASE argument) defaults to the public Python image."""
    base_arg = ["--build-arg", f"BASE={base}"] if base else []
    if docker_engine():
        argv = ["docker", "build", *base_arg, "--tag", tag, str(ROOT)]
    else:
        require_podman()
        local = base is not None and base.startswith("localhost/")
        # --layers=false: no intermediate images left behind (the build stage alone is 830 MB)
        argv = ["podman", "build", "--isolation=chroot", "--layers=false", *base_arg, "--tag", tag]
        argv += ["--pull=never"] if local else []
        argv += [*_host_pip_settings(), str(ROOT)]
    _say(log, shlex.join(argv))
    previous = None if argv[0] == "docker" else _image_id(tag)
    started = time.monotonic()
    built = subprocess.run(argv, check=False, stdout=None if log else subprocess.DEVNULL)  # its output, when logging
    if built.returncode != 0:
        raise ImageError(f"`{argv[0]} build` exited {built.returncode} (its output above)")
    _say(log, f"built {tag} in {time.monotonic() - started:.0f} s")
    if previous and previous != _image_id(tag):  # the image this one replaces, now without a name
        subprocess.run(["podman", "image", "rm", previous], capture_output=True, check=False)
    return tag


def _image_id(tag: str) -> str | None:
    found = subprocess.run(["podman", "image", "inspect", "--format", "{{.Id}}", tag], capture_output=True, text=True)
    return found.stdout.strip() if found.returncode == 0 else None


def _host_pip_settings() -> list[str]:
    """Mounts for the build's RUN steps, where pip needs the host's settings to reach the index:
    the CA bundle behind a TLS-intercepting proxy, and the host's index variables. pip reads them
    from root's configuration (`/root/.config/pip/pip.conf`, a folder mounted at /root, which both
    bases have, so nothing of it stays in the image). Proxy variables are build arguments Docker and
    Podman predefine, not kept either."""
    settings: list[str] = []
    config = {name.removeprefix("PIP_").lower().replace("_", "-"): os.environ.get(name, "") for name in PIP_ENVIRONMENT}
    if HOST_CA_BUNDLE.is_file():
        settings += ["--volume", f"{HOST_CA_BUNDLE.parent}:{HOST_CA_BUNDLE.parent}:ro"]
        config["cert"] = str(HOST_CA_BUNDLE)
    config = {key: value for key, value in config.items() if value and "file://" not in value}  # not the host's folders
    if config:
        pip_conf = BASE_CACHE / "build-home" / ".config" / "pip" / "pip.conf"
        pip_conf.parent.mkdir(parents=True, exist_ok=True)
        pip_conf.write_text("[global]\n" + "".join(f"{key} = {value}\n" for key, value in config.items()))
        settings += ["--volume", f"{BASE_CACHE / 'build-home'}:/root:ro"]
    for name in PROXY_ENVIRONMENT:
        if os.environ.get(name):
            settings += ["--build-arg", f"{name}={os.environ[name]}"]
    return settings


# -- running what was built, as a container runtime with a read-only root would -----------------


@dataclass(frozen=True)
class Bind:
    host: Path
    path: str  # inside the image: under /tmp (a tmpfs), since the image's own folders are read-only
    read_only: bool = True


def image_config(tag: str) -> dict[str, Any]:
    """The image's User, Env, WorkingDir, Entrypoint, ..."""
    (inspected,) = json.loads(_run(["podman", "image", "inspect", tag]).stdout)
    config: dict[str, Any] = inspected["Config"]
    return config


def run(
    tag: str,
    argv: Sequence[str],
    binds: Sequence[Bind] = (),
    *,
    entrypoint: Sequence[str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` after the image's ENTRYPOINT (or `entrypoint`) in the image's file system: as the
    image's USER, with its ENV and WORKDIR, the root read-only, /tmp a tmpfs, `binds` under /tmp."""
    require_podman()
    config = image_config(tag)
    user = str(config.get("User") or "0:0")
    if entrypoint is None:
        entrypoint = [str(word) for word in config.get("Entrypoint") or []]
    env = [str(pair) for pair in config.get("Env") or []]
    workdir = str(config.get("WorkingDir") or "/")
    for bind in binds:
        if not bind.path.startswith("/tmp/"):
            raise ImageError(f"{bind.path}: the image's root is read-only; mount under /tmp/")
    mounted = _run(["podman", "image", "mount", tag]).stdout.strip()
    try:
        home = _home(Path(mounted), user)
        if not any(pair.startswith("HOME=") for pair in env):
            env.append(f"HOME={home}")
        # In a mount namespace of its own: every mount below is private, and goes away with the process.
        lines = [
            "set -eu",
            f"root={shlex.quote(mounted)}",
            'mount --bind "$root" "$root"',
            'mount -o remount,bind,ro "$root"',
            'mount -t proc proc "$root/proc"',
            'mount --rbind /dev "$root/dev"',
            'mount -t tmpfs -o mode=1777,size=2g tmpfs "$root/tmp"',
        ]
        for bind in binds:
            options = "remount,bind,ro" if bind.read_only else "remount,bind"
            target = f'"$root"{shlex.quote(bind.path)}'
            lines += [f"mkdir -p {target}", f"mount --bind {shlex.quote(str(bind.host))} {target}"]
            lines += [f"mount -o {options} {target}"]
        in_workdir = f'cd {shlex.quote(workdir)} && exec "$@"'
        command = ["env", "-i", *env, "sh", "-c", in_workdir, "sh", *entrypoint, *argv]
        lines.append(f'exec chroot --userspec={shlex.quote(user)} "$root" {shlex.join(command)}')
        script = "\n".join(lines)
        namespace = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
        return subprocess.run(namespace, text=True, capture_output=True, check=False, timeout=timeout)
    finally:
        subprocess.run(["podman", "image", "unmount", tag], capture_output=True, check=False)


def _home(root: Path, user: str) -> str:
    """The home folder /etc/passwd of the image gives the user (as Docker sets HOME), else /."""
    uid = user.split(":")[0]
    for line in (root / "etc" / "passwd").read_text(encoding="utf-8").splitlines():
        fields = line.split(":")
        if len(fields) >= 6 and uid in (fields[0], fields[2]):
            return fields[5]
    return "/"


def _say(log: bool, message: str) -> None:
    if log:
        print(f"image: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.image", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("build", help="docker build when an engine answers, else podman build")
    make.add_argument("--tag", default=TAG)
    bases = make.add_mutually_exclusive_group()
    bases.add_argument("--base", help="the Dockerfile's BASE (default: its own, python:3.11-slim)")
    bases.add_argument("--local-base", action="store_true", help=f"build on {LOCAL_BASE}, made here by debootstrap")
    start = commands.add_parser("run", help="run the image's file system as its user, read-only root (Podman, root)")
    start.add_argument("--tag", default=TAG)
    start.add_argument("--bind", action="append", default=[], metavar="HOST:/tmp/PATH[:ro]")
    start.add_argument("args", nargs="*", help="after the ENTRYPOINT (introspect)")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            build(args.tag, local_base() if args.local_base else args.base)
            return 0
        result = run(args.tag, args.args, [_bind(text) for text in args.bind])
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        return result.returncode
    except ImageError as error:
        print(f"image: error: {error}", file=sys.stderr)
        return 1


def _bind(text: str) -> Bind:
    """HOST:PATH or HOST:PATH:ro."""
    host, path, *mode = text.split(":")
    if mode not in ([], ["ro"]):
        raise ImageError(f"--bind {text}: HOST:PATH or HOST:PATH:ro")
    return Bind(Path(host).resolve(), path, read_only=mode == ["ro"])


if __name__ == "__main__":
    sys.exit(main())
