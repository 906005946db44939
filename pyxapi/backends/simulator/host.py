"""Facts of the simulated host: a believable single-socket XCP-ng 8.3 box."""
from __future__ import annotations

import datetime as _dt

from pyxapi.backends.base import GiB, MiB

CPU_MODEL = "AMD EPYC 7302P 16-Core Processor"
CPU_VENDOR = "AuthenticAMD"
CPU_FAMILY = 23
CPU_MODEL_NUMBER = 49
CPU_STEPPING = 0
CPU_SPEED_MHZ = 2999.998

# Linux /proc/cpuinfo flag names a Zen 2 CPU shows in a PV dom0.
CPU_FLAGS = (
    "fpu de tsc msr pae mce cx8 apic sep mca cmov pat clflush mmx fxsr sse sse2 ht syscall nx "
    "mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl nonstop_tsc cpuid extd_apicid "
    "pni pclmulqdq monitor ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand "
    "hypervisor lahf_lm cmp_legacy extapic cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw "
    "topoext perfctr_core ssbd ibpb stibp vmmcall fsgsbase bmi1 avx2 bmi2 erms rdseed adx "
    "clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 clzero xsaveerptr arat npt svm_lock "
    "nrip_save vgif umip rdpid"
)

# Featureset bitmaps as xapi shows them (32-bit words, hex, dash separated).
FEATURES_HVM = ("178bfbff-f6f83203-2e500800-040001f3-0000000f-219c07a9-0040000c-00000000-"
                "311ed005-00000010-00000000-18000064-00000000-00000000-00000000-00000000-"
                "00000000-00000000")
FEATURES_PV = ("1789cbf5-f6f83203-2e500800-040001f3-0000000f-219c01a9-0040000c-00000000-"
               "311ed005-00000010-00000000-18000064-00000000-00000000-00000000-00000000-"
               "00000000-00000000")

SOFTWARE_VERSION = {
    "product_version": "8.3.0",
    "product_version_text": "8.3",
    "product_version_text_short": "8.3",
    "platform_name": "XCP",
    "platform_version": "3.4.0",
    "product_brand": "XCP-ng",
    "build_number": "cloud",
    "date": "2024-10-02",
    "xapi": "24.19",
    "xapi_build": "24.19.2",
    "xen": "4.17.5-3",
    "linux": "4.19.0+1",
    "xencenter_min": "2.21",
    "xencenter_max": "2.21",
    "network_backend": "openvswitch",
    "pyxapi_backend": "simulator",
}


def dom0_memory_for(total: int) -> int:
    """XCP-ng's rule of thumb for the control domain: 1 GiB + 5 % of RAM, at most 8 GiB."""
    return min(8 * GiB, (GiB + total * 5 // 100) // MiB * MiB)


def hypervisor_overhead_for(total: int) -> int:
    """Memory Xen keeps for itself (frame tables, heap): about 1 % of RAM."""
    return (total // 100) // MiB * MiB


def build_host_info(*, hostname: str, memory_total: int, cpu_count: int, socket_count: int,
                    boot_time: _dt.datetime, supported_sr_types: list[str]) -> dict:
    cpus = [{
        "number": i,
        "vendor": CPU_VENDOR,
        "speed": int(CPU_SPEED_MHZ),
        "modelname": CPU_MODEL,
        "family": CPU_FAMILY,
        "model": CPU_MODEL_NUMBER,
        "stepping": CPU_STEPPING,
        "flags": CPU_FLAGS,
        "features": FEATURES_HVM,
    } for i in range(cpu_count)]
    sv = dict(SOFTWARE_VERSION, hostname=hostname)
    return {
        "hostname": hostname,
        "address": "10.0.0.2",
        "cpu_count": cpu_count,
        "socket_count": socket_count,
        "cpu_info": {
            "cpu_count": str(cpu_count),
            "socket_count": str(socket_count),
            "threads_per_core": "2",
            "vendor": CPU_VENDOR,
            "speed": f"{CPU_SPEED_MHZ:.3f}",
            "modelname": CPU_MODEL,
            "family": str(CPU_FAMILY),
            "model": str(CPU_MODEL_NUMBER),
            "stepping": str(CPU_STEPPING),
            "flags": CPU_FLAGS,
            "features_pv": FEATURES_PV,
            "features_hvm": FEATURES_HVM,
            "features_pv_host": FEATURES_PV,
            "features_hvm_host": FEATURES_HVM,
        },
        "cpus": cpus,
        "cpu_configuration": {},
        "memory_total": memory_total,
        "memory_overhead": hypervisor_overhead_for(memory_total),
        "dom0_memory": dom0_memory_for(memory_total),
        "dom0_vcpus": min(16, cpu_count),
        "software_version": sv,
        "capabilities": ["xen-3.0-x86_64", "hvm-3.0-x86_32", "hvm-3.0-x86_32p",
                         "hvm-3.0-x86_64"],
        "sched_policy": "credit",
        "bios_strings": {
            "bios-vendor": "American Megatrends Inc.",
            "bios-version": "2.4",
            "system-manufacturer": "Supermicro",
            "system-product-name": "AS -1114S-WTRT",
            "system-version": "0123456789",
            "system-serial-number": "S421387X1A01234",
            "baseboard-manufacturer": "Supermicro",
            "baseboard-product-name": "H12SSW-NT",
            "baseboard-version": "1.01",
            "baseboard-serial-number": "UM21AS001234",
            "hp-rombios": "",
            "oem-1": "Xen",
            "oem-2": "MS_VM_CERT/SHA1/bdbeb6e0a816d43fa6d3fe8aaef04c2bad9d3e3d",
        },
        "chipset_info": {"iommu": "true"},
        "pifs": [
            {"device": "eth0", "mac": "3c:ec:ef:12:34:56", "mtu": 1500, "bridge": "xenbr0",
             "speed": 10000, "duplex": True, "vendor": "Intel Corporation",
             "model": "Ethernet Controller X710 for 10GbE SFP+", "carrier": True,
             "capabilities": ["sriov"], "sriov_totalvfs": 64,
             "management": True, "ip": "10.0.0.2", "netmask": "255.255.255.0",
             "gateway": "10.0.0.1", "dns": "10.0.0.1"},
            {"device": "eth1", "mac": "3c:ec:ef:12:34:57", "mtu": 1500, "bridge": "xenbr1",
             "speed": 10000, "duplex": True, "vendor": "Intel Corporation",
             "model": "Ethernet Controller X710 for 10GbE SFP+", "carrier": True,
             "capabilities": ["sriov"], "sriov_totalvfs": 64,
             "management": False, "ip": "", "netmask": "", "gateway": "", "dns": ""},
        ],
        "pci_devices": [dict(d) for d in PCI_DEVICES],
        "usb_devices": [dict(d) for d in USB_DEVICES],
        "supported_sr_types": list(supported_sr_types),
        "boot_time": boot_time,
    }


def _pci(pci_id, class_id, class_name, vendor_id, vendor_name, device_id, device_name,
         driver="", sub_vendor=("15d9", "Super Micro Computer Inc"), sub_device=("", "")):
    return {"pci_id": pci_id, "class_id": class_id, "class_name": class_name,
            "vendor_id": vendor_id, "vendor_name": vendor_name, "device_id": device_id,
            "device_name": device_name, "driver_name": driver,
            "subsystem_vendor_id": sub_vendor[0], "subsystem_vendor_name": sub_vendor[1],
            "subsystem_device_id": sub_device[0], "subsystem_device_name": sub_device[1]}


_AMD = ("1022", "Advanced Micro Devices, Inc. [AMD]")
_X710 = ("1572", "Ethernet Controller X710 for 10GbE SFP+")
# What `lspci` shows on the box that matters to the API: the NICs (eth0/eth1 are their two
# functions), the BMC's VGA (the system display), a Tesla T4 for passthrough, the NVMe disk
# and the USB controller. The X710 ports can do SR-IOV (64 virtual functions each).
PCI_DEVICES = [
    _pci("0000:00:00.0", "0600", "Host bridge", *_AMD, "1480",
         "Starship/Matisse Root Complex", sub_device=("1480", "")),
    _pci("0000:03:00.0", "0300", "VGA compatible controller", "1a03", "ASPEED Technology, Inc.",
         "2000", "ASPEED Graphics Family", "ast", sub_device=("1b95", "")),
    _pci("0000:21:00.0", "0302", "3D controller", "10de", "NVIDIA Corporation", "1eb8",
         "TU104GL [Tesla T4]", "", ("10de", "NVIDIA Corporation"), ("12a2", "TU104GL [Tesla T4]")),
    _pci("0000:41:00.0", "0200", "Ethernet controller", "8086", "Intel Corporation", *_X710,
         "i40e", ("8086", "Intel Corporation"), ("0007", "Ethernet Converged Network Adapter X710-2")),
    _pci("0000:41:00.1", "0200", "Ethernet controller", "8086", "Intel Corporation", *_X710,
         "i40e", ("8086", "Intel Corporation"), ("0000", "Ethernet Converged Network Adapter X710")),
    _pci("0000:05:00.3", "0c03", "USB controller", *_AMD, "148c",
         "Starship USB 3.0 Host Controller", "xhci_hcd", sub_device=("1486", "")),
    _pci("0000:c1:00.0", "0108", "Non-Volatile memory controller", "144d",
         "Samsung Electronics Co Ltd", "a824", "NVMe SSD Controller PM173X", "nvme",
         ("144d", "Samsung Electronics Co Ltd"), ("a80a", "")),
]

# The USB devices xapi's policy lets through (hubs and the BMC's keyboard/mouse are not):
# one memory stick in a front port.
USB_DEVICES = [
    {"path": "2-1", "vendor_id": "0781", "vendor_desc": "SanDisk Corp.", "product_id": "5583",
     "product_desc": "Ultra Fit", "serial": "4C530001230815107133", "version": "3.20",
     "description": "SanDisk Corp._Ultra Fit_4C530001230815107133", "speed": 5000.0},
]
