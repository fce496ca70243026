"""Prints the human summary of one boot's console log (used by qemu/demo)."""
import sys
from guest import parse_report, Boot

console = open(sys.argv[1], encoding="utf-8", errors="replace").read().replace("\r\n", "\n")
b = Boot(console, 0, *parse_report(console))
print("--- what slotinit logged (kernel timestamps)")
for line in console.splitlines():
    if "slotinit: " in line or "Run /init" in line:
        print("  " + line)
if not b.reported:
    print("--- the system did not report: see the log above")
    sys.exit(1)
h = b.handoff()
print(f"--- booted slot {h['slot']} ({h['decision']['source']}), "
      f"system {b.mount('/').source} {'read-only' if b.mount('/').readonly else 'READ-WRITE'}")
print("--- mounts seen by the system's init")
for m in b.mounts():
    if m.mount_point not in ("/proc", "/sys", "/dev", "/run"):
        print(f"  {m.mount_point:<20} {m.source}{m.root if m.root != '/' else ''} ({m.fstype}, {m.options})")
print("--- /dev/disk/by-slot")
for name, target in b.links().items():
    print(f"  {name:<14} -> {target[1] if target else 'missing'}")
print(f"--- machine-id {b.machine_id()} ({h['machine_id_source']})")
print("--- timings (us): " + ", ".join(f"{k} {v}" for k, v in h["timings_us"]))
start, end = b.kernel_time(r"Run /init as init process"), b.kernel_time(r"slotinit: switching to ")
if start is not None and end is not None:
    print(f"--- kernel 'Run /init' -> exec of {h['init']}: {end - start:.3f} s")
for e in h["errors"]:
    print(f"--- ERROR ({e['kind']}): {e['message']}")
for w in h["warnings"]:
    print(f"--- warning ({w['kind']}): {w['message']}")
