"""What the simulated guest agent reports, by guest OS.

``profile_for(os_hint)`` picks a profile from a hint such as a template's reference_label
("debian-12") or name_label ("Debian Bookworm 12"); None means "no agent" (unknown OS,
"Other install media"): such a guest never reports guest metrics.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Optional

LINUX_TOOLS = {"major": "8", "minor": "4", "micro": "0", "build": "1"}
WINDOWS_TOOLS = {"major": "9", "minor": "4", "micro": "0", "build": "146"}


def _linux(name, uname, distro, major, minor=None):
    v = {"name": name, "uname": uname, "distro": distro, "major": major}
    if minor is not None:
        v["minor"] = minor
    return {"family": "linux", "os_version": v, "tools": LINUX_TOOLS}


def _windows(edition, build, partition=2):
    return {
        "family": "windows",
        "os_version": {
            "name": f"Microsoft {edition}|C:\\Windows|\\Device\\Harddisk0\\Partition{partition}",
            "distro": "windows", "major": "10", "minor": "0", "spmajor": "0", "spminor": "0",
            "build": str(build),
        },
        "tools": WINDOWS_TOOLS,
    }


# (tokens that must all be present, profile); the first match wins, so specific ones first.
PROFILES: list[tuple[tuple[str, ...], dict]] = [
    (("server", "2025"), _windows("Windows Server 2025 Standard", 26100)),
    (("server", "2022"), _windows("Windows Server 2022 Standard", 20348)),
    (("server", "2019"), _windows("Windows Server 2019 Standard", 17763)),
    (("server", "2016"), _windows("Windows Server 2016 Standard", 14393)),
    (("windows", "11"), _windows("Windows 11 Pro", 22631, 3)),
    (("windows", "10"), _windows("Windows 10 Pro", 19045)),
    (("debian", "13"), _linux("Debian GNU/Linux 13 (trixie)", "6.12.41+deb13-amd64", "debian", "13", "0")),
    (("trixie",), _linux("Debian GNU/Linux 13 (trixie)", "6.12.41+deb13-amd64", "debian", "13", "0")),
    (("debian", "12"), _linux("Debian GNU/Linux 12 (bookworm)", "6.1.0-26-amd64", "debian", "12", "7")),
    (("bookworm",), _linux("Debian GNU/Linux 12 (bookworm)", "6.1.0-26-amd64", "debian", "12", "7")),
    (("debian", "11"), _linux("Debian GNU/Linux 11 (bullseye)", "5.10.0-32-amd64", "debian", "11", "11")),
    (("debian", "10"), _linux("Debian GNU/Linux 10 (buster)", "4.19.0-27-amd64", "debian", "10", "13")),
    (("ubuntu", "24.04"), _linux("Ubuntu 24.04.1 LTS", "6.8.0-45-generic", "ubuntu", "24", "04")),
    (("ubuntu", "22.04"), _linux("Ubuntu 22.04.5 LTS", "5.15.0-122-generic", "ubuntu", "22", "04")),
    (("ubuntu", "20.04"), _linux("Ubuntu 20.04.6 LTS", "5.4.0-196-generic", "ubuntu", "20", "04")),
    (("rocky", "10"), _linux("Rocky Linux 10.0 (Red Quartz)", "6.12.0-55.9.1.el10_0.x86_64", "rocky", "10", "0")),
    (("rocky", "9"), _linux("Rocky Linux 9.4 (Blue Onyx)", "5.14.0-427.13.1.el9_4.x86_64", "rocky", "9", "4")),
    (("rocky", "8"), _linux("Rocky Linux 8.10 (Green Obsidian)", "4.18.0-553.el8_10.x86_64", "rocky", "8", "10")),
    (("almalinux", "9"), _linux("AlmaLinux 9.4 (Seafoam Ocelot)", "5.14.0-427.13.1.el9_4.x86_64", "almalinux", "9", "4")),
    (("almalinux", "8"), _linux("AlmaLinux 8.10 (Cerulean Leopard)", "4.18.0-553.el8_10.x86_64", "almalinux", "8", "10")),
    (("centos", "stream", "9"), _linux("CentOS Stream 9", "5.14.0-503.el9.x86_64", "centos", "9")),
    (("centos", "9"), _linux("CentOS Stream 9", "5.14.0-503.el9.x86_64", "centos", "9")),
    (("centos", "7"), _linux("CentOS Linux 7 (Core)", "3.10.0-1160.119.1.el7.x86_64", "centos", "7", "9")),
    (("rhel", "9"), _linux("Red Hat Enterprise Linux 9.4 (Plow)", "5.14.0-427.13.1.el9_4.x86_64", "rhel", "9", "4")),
    (("red", "hat", "9"), _linux("Red Hat Enterprise Linux 9.4 (Plow)", "5.14.0-427.13.1.el9_4.x86_64", "rhel", "9", "4")),
    (("rhel", "8"), _linux("Red Hat Enterprise Linux 8.10 (Ootpa)", "4.18.0-553.el8_10.x86_64", "rhel", "8", "10")),
    (("red", "hat", "8"), _linux("Red Hat Enterprise Linux 8.10 (Ootpa)", "4.18.0-553.el8_10.x86_64", "rhel", "8", "10")),
    (("oel", "9"), _linux("Oracle Linux Server 9.4", "5.15.0-209.161.7.2.el9uek.x86_64", "oracle", "9", "4")),
    (("oracle", "9"), _linux("Oracle Linux Server 9.4", "5.15.0-209.161.7.2.el9uek.x86_64", "oracle", "9", "4")),
    (("oel", "8"), _linux("Oracle Linux Server 8.10", "5.15.0-209.161.7.2.el8uek.x86_64", "oracle", "8", "10")),
    (("oracle", "8"), _linux("Oracle Linux Server 8.10", "5.15.0-209.161.7.2.el8uek.x86_64", "oracle", "8", "10")),
    (("sle", "15"), _linux("SUSE Linux Enterprise Server 15 SP6", "6.4.0-150600.23.22-default", "sles", "15", "6")),
    (("generic", "linux"), _linux("Linux", "6.6.52", "linux", "6", "6")),
]


def _tokens(hint: str) -> set[str]:
    return set(t for t in re.split(r"[^a-z0-9.]+", hint.lower()) if t)


def profile_for(os_hint: Optional[str]) -> Optional[dict]:
    if not os_hint:
        return None
    toks = _tokens(os_hint)
    for need, profile in PROFILES:
        if all(t in toks for t in need):
            return profile
    return None


def link_local_ipv6(mac: str) -> str:
    """fe80:: address built from a MAC (modified EUI-64), as guests configure it."""
    try:
        b = [int(x, 16) for x in mac.split(":")]
        if len(b) != 6:
            raise ValueError
    except ValueError:
        return ""
    b[0] ^= 0x02
    eui = b[:3] + [0xFF, 0xFE] + b[3:]
    iid = int.from_bytes(bytes(eui), "big")
    return str(ipaddress.IPv6Address((0xFE80 << 112) | iid))


def guest_other(profile: dict) -> dict:
    other = {
        "feature-shutdown": "1", "feature-poweroff": "1", "feature-reboot": "1",
        "feature-suspend": "1", "feature-vcpu-hotplug": "1", "feature-balloon": "1",
        "platform-feature-multiprocessor-suspend": "1",
        "platform-feature-xs_reset_watches": "1",
        "data-ts": "1",
        "has-vendor-device": "1" if profile["family"] == "windows" else "0",
    }
    if profile["family"] == "windows":
        other["feature-static-ip-setting"] = "1"
    return other
