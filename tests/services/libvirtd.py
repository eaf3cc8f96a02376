"""A real libvirtd + QEMU (TCG) for tests, in a private mount + network namespace.

Follows shared/recipes/libvirt: the daemon sees /etc/libvirt, /etc/passwd+group, /var and /run
as folders under one state directory, so the host's own libvirt config and state are never read or
written, and guest tap devices (none are used here) would live in a network namespace with no route
out. Its unix socket is reachable from the host as `qemu+unix:///system?socket=<state>/run/...`.

Everything started here is stopped by PID: guests through libvirt then their QEMU pid files,
then the daemon. Nothing is left running after `stop()`.

Usage (see tests/libvirt/conftest.py):

    daemon = Libvirtd(tmp_dir); daemon.start()
    daemon.define_guest(GuestSpec(...)); daemon.wait_for_balloon_stats("guest")
    ... LibvirtSource(uri=daemon.uri) ...
    daemon.stop()
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt

GUEST_CACHE = Path(os.environ.get("CAPACITYD_LIBVIRT_CACHE", "/var/cache/capacityd-ci/libvirt"))
PROVISION_HINT = "run scripts/provision/libvirt.sh (it installs libvirtd/QEMU and builds the guest kernel+initramfs)"
NOVA_NS_1_1 = "http://openstack.org/xmlns/libvirt/nova/1.1"
HOST_UUID = "0b5e8a43-7f0c-4c1e-9d2a-c0ffee000001"
"""The daemon's host_uuid (libvirtd.conf), so tests can check the source reports it."""

LIBVIRTD_CONF = f"""\
listen_tls = 0
listen_tcp = 0
unix_sock_group = "root"
unix_sock_ro_perms = "0777"
unix_sock_rw_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
host_uuid = "{HOST_UUID}"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
keepalive_interval = 5
keepalive_count = 5
"""
QEMU_CONF = """\
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
"""


class LibvirtdError(RuntimeError):
    """libvirtd or a guest could not be started; the message says why (with the daemon's log tail)."""


@dataclass(frozen=True)
class GuestSpec:
    """A QEMU TCG guest. With `kernel=True` it boots Debian's cloud kernel + a busybox initramfs that
    loads virtio_balloon, so balloon stats are the guest's own; without, it is BIOS-only."""

    name: str
    uuid: str
    memory_mib: int = 128
    vcpus: int = 1
    kernel: bool = True
    balloon_period: int = 2
    nova_flavor: str | None = "m1.nano"
    nova_project: str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"


class Libvirtd:
    """One private libvirtd. Not thread-safe; one per test session is plenty."""

    def __init__(self, state_dir: Path, guest_images: bool = True):
        self.state = Path(state_dir).resolve()
        self.guest_images = guest_images
        """Copy the guest kernel + initramfs in (not needed to serve test-driver nodes only)."""
        self.process: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._mnt_ns: str | None = None

    # ------------------------------------------------------------------ paths

    @property
    def socket(self) -> Path:
        return self.state / "run" / "libvirt" / "libvirt-sock"

    @property
    def uri(self) -> str:
        return f"qemu+unix:///system?socket={self.socket}"

    @property
    def admin_uri(self) -> str:
        return f"libvirtd:///system?socket={self.state / 'run' / 'libvirt' / 'libvirt-admin-sock'}"

    @property
    def log_file(self) -> Path:
        return self.state / "var" / "log" / "libvirt" / "libvirtd.log"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no libvirtd log)"

    # ------------------------------------------------------------------ lifecycle

    def _prepare(self) -> None:
        s = self.state
        for sub in (
            "etc/libvirt",
            "var/lib/libvirt",
            "var/log/libvirt",
            "var/cache/libvirt",
            "var/tmp",
            "run/lock",
            "images",
        ):
            (s / sub).mkdir(parents=True, exist_ok=True)
        for link, target in ((s / "var" / "run", "/run"), (s / "var" / "lock", "/run/lock")):
            if not link.is_symlink():
                link.symlink_to(target)
        (s / "var" / "tmp").chmod(0o1777)
        passwd = Path("/etc/passwd").read_text()
        group = Path("/etc/group").read_text()
        if not any(line.startswith("libvirt-qemu:") for line in passwd.splitlines()):
            passwd += "libvirt-qemu:x:64055:64055::/var/lib/libvirt:/usr/sbin/nologin\n"
        if not any(line.startswith("libvirt-qemu:") for line in group.splitlines()):
            group += "libvirt-qemu:x:64055:\n"
        if not any(line.startswith("kvm:") for line in group.splitlines()):
            group += "kvm:x:64056:libvirt-qemu\n"
        (s / "etc" / "passwd").write_text(passwd)
        (s / "etc" / "group").write_text(group)
        (s / "etc" / "libvirt" / "libvirtd.conf").write_text(LIBVIRTD_CONF)
        (s / "etc" / "libvirt" / "qemu.conf").write_text(QEMU_CONF)
        # /var is replaced inside the namespace: the guest kernel must live under the state folder.
        for name in ("vmlinuz", "initrd.img") if self.guest_images else ():
            source = GUEST_CACHE / name
            if not source.is_file():
                raise LibvirtdError(f"guest {name} missing at {source}: {PROVISION_HINT}")
            shutil.copyfile(source, s / "images" / name)

    def start(self, timeout: float = 60.0) -> None:
        """Start the daemon and wait until its socket answers; LibvirtdError says why it did not."""
        for binary in ("/usr/sbin/libvirtd", "/usr/bin/qemu-system-x86_64", "/usr/bin/unshare"):
            if not Path(binary).exists():
                raise LibvirtdError(f"{binary} is not installed: {PROVISION_HINT}")
        self._prepare()
        s = self.state
        script = (
            "set -e; ip link set lo up; "
            f"mount --bind {s}/etc/libvirt /etc/libvirt; mount --bind {s}/etc/passwd /etc/passwd; "
            f"mount --bind {s}/etc/group /etc/group; mount --bind {s}/var /var; mount --bind {s}/run /run; "
            "exec /usr/sbin/libvirtd"
        )
        stderr = open(s / "libvirtd.stderr", "wb")  # noqa: SIM115 - handed to the child
        # unshare and bash exec: the Popen pid *is* libvirtd's pid.
        self.process = subprocess.Popen(
            ["unshare", "--mount", "--net", "--propagation", "private", "/bin/bash", "-c", script],
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            start_new_session=True,
        )
        stderr.close()
        deadline = time.monotonic() + timeout
        last_error = "socket not there yet"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = (s / "libvirtd.stderr").read_text(errors="replace")[-2000:]
                raise LibvirtdError(
                    f"libvirtd exited with {self.process.returncode} during start-up.\nstderr: {err}\n"
                    f"log: {self.log_tail()}"
                )
            if self.socket.exists():
                try:
                    conn = libvirt.open(self.uri)
                    conn.getVersion()
                    conn.close()
                    # The daemon now runs in its private namespace: remember it, and guard it.
                    self._mnt_ns = os.readlink(f"/proc/{self.process.pid}/ns/mnt")
                    self._start_watchdog()
                    return
                except libvirt.libvirtError as error:
                    last_error = str(error)
            time.sleep(0.2)
        self.stop()
        raise LibvirtdError(
            f"libvirtd did not answer on {self.socket} within {timeout:.0f}s ({last_error}).\nlog: {self.log_tail()}"
        )

    def _start_watchdog(self) -> None:
        """A tiny shell that outlives us: if this (test) process dies without calling stop(), it kills
        everything in the daemon's private namespace by PID, so nothing is left running."""
        assert self.process is not None and self._mnt_ns is not None
        script = f"""
            while kill -0 {os.getpid()} 2>/dev/null && kill -0 {self.process.pid} 2>/dev/null; do sleep 1; done
            for p in /proc/[0-9]*; do
                [ "$(readlink "$p/ns/mnt" 2>/dev/null)" = {shlex.quote(self._mnt_ns)} ] && kill -9 "${{p#/proc/}}"
            done
        """
        self._watchdog = subprocess.Popen(
            ["/bin/sh", "-c", script],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def connect(self) -> Any:
        """A read-write connection for the test itself (defining, destroying guests)."""
        return libvirt.open(self.uri)

    def namespace_pids(self) -> list[int]:
        """PIDs of every process in the daemon's private mount namespace (libvirtd, QEMU, helpers).

        The namespace is ours alone, so this can never match a process of the host; PIDs are read
        fresh from /proc, so a recycled PID cannot be mistaken for one of ours."""
        if self._mnt_ns is None:
            return []
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if os.readlink(entry / "ns" / "mnt") == self._mnt_ns:
                        pids.append(int(entry.name))
        return pids

    def qemu_pids(self) -> list[int]:
        pids = []
        for pid in self.namespace_pids():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().startswith("qemu-system"):
                    pids.append(pid)
        return pids

    def stop(self) -> None:
        """Destroy guests, then stop the daemon; anything left is killed by PID."""
        if self.process is None:
            return
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None and watchdog.poll() is None:
            watchdog.kill()
            watchdog.wait(timeout=5)
        if self.process.poll() is None:
            with contextlib.suppress(libvirt.libvirtError):
                conn = libvirt.open(self.uri)
                for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                    with contextlib.suppress(libvirt.libvirtError):
                        dom.destroy()
                conn.close()
        for pid in self.qemu_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        for pid in self.namespace_pids():  # helpers the daemon may have left behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process = None

    # ------------------------------------------------------------------ guests

    def guest_xml(self, spec: GuestSpec) -> str:
        images = self.state / "images"
        boot = (
            f"<kernel>{images}/vmlinuz</kernel><initrd>{images}/initrd.img</initrd>"
            "<cmdline>console=ttyS0 panic=-1 loglevel=4 rdinit=/init</cmdline>"
            if spec.kernel
            else ""
        )
        metadata = ""
        if spec.nova_flavor:
            metadata = f"""<metadata>
    <nova:instance xmlns:nova="{NOVA_NS_1_1}">
      <nova:package version="27.1.0"/>
      <nova:name>{spec.name}-server</nova:name>
      <nova:creationTime>2024-05-01 10:00:00</nova:creationTime>
      <nova:flavor name="{spec.nova_flavor}">
        <nova:memory>{spec.memory_mib}</nova:memory><nova:disk>1</nova:disk><nova:swap>0</nova:swap>
        <nova:ephemeral>0</nova:ephemeral><nova:vcpus>{spec.vcpus}</nova:vcpus>
      </nova:flavor>
      <nova:owner>
        <nova:user uuid="aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">demo-user</nova:user>
        <nova:project uuid="{spec.nova_project}">demo</nova:project>
      </nova:owner>
      <nova:root type="image" uuid="cccccccc-cccc-cccc-cccc-cccccccccccc"/>
    </nova:instance>
  </metadata>"""
        serial = self.state / f"{spec.name}.serial"
        return f"""<domain type='qemu'>
  <name>{spec.name}</name>
  <uuid>{spec.uuid}</uuid>
  {metadata}
  <memory unit='MiB'>{spec.memory_mib}</memory>
  <currentMemory unit='MiB'>{spec.memory_mib}</currentMemory>
  <vcpu placement='static'>{spec.vcpus}</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type>{boot}</os>
  <features><acpi/></features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='file'><source path='{serial}'/><target port='0'/></serial>
    <console type='file'><source path='{serial}'/><target type='serial' port='0'/></console>
    <video><model type='none'/></video>
    <memballoon model='virtio'><stats period='{spec.balloon_period}'/></memballoon>
  </devices>
</domain>"""

    def define_guest(self, spec: GuestSpec, start: bool = True) -> None:
        conn = self.connect()
        try:
            dom = conn.defineXML(self.guest_xml(spec))
            if start:
                dom.create()
        except libvirt.libvirtError as error:
            raise LibvirtdError(
                f"guest {spec.name} could not be defined/started: {error}\nlog: {self.log_tail()}"
            ) from None
        finally:
            conn.close()

    def create_transient(self, spec: GuestSpec, paused: bool = True) -> None:
        """A transient guest (gone entirely once destroyed), started paused so it costs no CPU."""
        conn = self.connect()
        try:
            flags = libvirt.VIR_DOMAIN_START_PAUSED if paused else 0
            conn.createXML(self.guest_xml(spec), flags)
        except libvirt.libvirtError as error:
            raise LibvirtdError(f"transient guest {spec.name} could not start: {error}") from None
        finally:
            conn.close()

    def serial_output(self, name: str) -> str:
        try:
            return (self.state / f"{name}.serial").read_text(errors="replace")
        except OSError:
            return ""

    def wait_for_balloon_stats(self, name: str, timeout: float = 240.0) -> dict[str, Any]:
        """Wait until the guest's virtio_balloon driver reports memory stats (the guest booted)."""
        conn = libvirt.openReadOnly(self.uri)
        try:
            dom = conn.lookupByName(name)
            deadline = time.monotonic() + timeout
            stats: dict[str, Any] = {}
            while time.monotonic() < deadline:
                records = conn.domainListGetStats([dom], libvirt.VIR_DOMAIN_STATS_BALLOON, 0)
                stats = records[0][1] if records else {}
                if "balloon.usable" in stats and stats.get("balloon.last-update", 0) > 0:
                    return stats
                time.sleep(1)
        finally:
            conn.close()
        raise LibvirtdError(
            f"guest {name} reported no balloon stats within {timeout:.0f}s (last: {stats}).\n"
            f"serial console tail: {self.serial_output(name)[-1500:]}"
        )

    # ------------------------------------------------------------------ admin

    def disconnect_clients(self) -> int:
        """Close every client connection of the daemon through the admin API (what `virt-admin
        client-disconnect` does); returns how many were closed. Simulates a dropped link."""
        result = subprocess.run(
            ["virt-admin", "-c", self.admin_uri, "srv-clients-list", "libvirtd"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        ids = [line.split()[0] for line in result.stdout.splitlines()[2:] if line.strip()]
        closed = 0
        for client_id in ids:
            done = subprocess.run(
                ["virt-admin", "-c", self.admin_uri, "client-disconnect", "libvirtd", client_id],
                capture_output=True,
                text=True,
                timeout=30,
            )
            closed += done.returncode == 0
        return closed
