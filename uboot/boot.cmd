# uboot/boot.cmd: A/B slot choice with RAUC's U-Boot boot-count contract, state in bootconfig:/uboot.env.
#
# uboot/build turns this into boot.scr (mkimage -T script). U-Boot's distro
# boot finds boot.scr on partition 1 (bootconfig, FAT) of the first disk and
# runs it. The script is the only party that counts boot attempts: slotinit
# runs with counter = "bootloader", follows rauc.slot= and never decrements.
#
# State, as RAUC's U-Boot backend reads and writes it:
#   BOOT_ORDER      bootnames, most preferred first ("A B" or "B A")
#   BOOT_A_LEFT     attempts left for slot A, hex without 0x
#   BOOT_B_LEFT     same for slot B
# It lives in uboot.env on the bootconfig partition: one copy of the U-Boot
# env block (little-endian CRC-32, then key=value\0...\0, padded to 0x4000),
# the file fw_printenv reads with the fw_env.config line
# "/path/to/uboot.env 0x0 0x4000" and slotinit rewrites on mark-good,
# mark-bad and mark-active. Only the three variables above are imported and
# written back; anything else in the file is ignored and dropped on the next
# write here.
#
# Nothing from the env reaches the kernel cmdline: the env is not
# authenticated, and a second rauc.slot= after ours would overrule the
# counters. (The tests build a variant with a hook, tests/qemu/uboot.py; it is
# not this script.)
#
# Each boot: load the state (missing or bad CRC: the defaults A B, 3 and 3),
# take the first slot of BOOT_ORDER with attempts left, count the attempt,
# write the file, then load that slot's kernel and initramfs and boot it with
# rauc.slot=<bootname>. No slot left: every counter back to 3, BOOT_ORDER back
# to "A B", write, reset the board.

# Where things are. distro boot sets devtype/devnum; default to virtio 0 when
# this script is sourced by hand.
test -n "${devtype}" || setenv devtype virtio
test -n "${devnum}" || setenv devnum 0
setenv bs_config_part 1
setenv bs_file uboot.env
setenv bs_size 0x4000
setenv bs_vars "BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT"
# Scratch for the env block: pxefile_addr_r (1 MiB above the script at
# scriptaddr, below the kernel at kernel_addr_r) is unused by this flow.
setenv bs_addr ${pxefile_addr_r}

# The commands that write the state. Run only after the state was loaded or
# replaced by the defaults: a file that failed its CRC is never written back
# as it was.
setenv bs_show 'echo "bootstate: BOOT_ORDER=${BOOT_ORDER} BOOT_A_LEFT=${BOOT_A_LEFT} BOOT_B_LEFT=${BOOT_B_LEFT}"'
setenv bs_save 'echo "bootstate: writing ${bs_file}"; env export -c -s ${bs_size} ${bs_addr} ${bs_vars} && fatwrite ${devtype} ${devnum}:${bs_config_part} ${bs_addr} ${bs_file} ${bs_size}'
setenv bs_defaults 'setenv BOOT_ORDER "A B"; setenv BOOT_A_LEFT 3; setenv BOOT_B_LEFT 3'

# 1. Load. The buffer is zeroed first so that a short file fails the CRC
# instead of being completed by whatever was in memory.
echo "bootstate: reading ${devtype} ${devnum}:${bs_config_part} ${bs_file}"
mw.b ${bs_addr} 0 ${bs_size}
setenv bs_loaded
if fatload ${devtype} ${devnum}:${bs_config_part} ${bs_addr} ${bs_file} ${bs_size}; then
  if env import -c ${bs_addr} ${bs_size} ${bs_vars}; then
    setenv bs_loaded 1
  fi
fi
if test -z "${bs_loaded}"; then
  echo "bootstate: ${bs_file} missing or corrupt: using the defaults"
  run bs_defaults
fi
# A valid file may still lack a variable (e.g. made by fw_setenv): default it.
test -n "${BOOT_ORDER}" || setenv BOOT_ORDER "A B"
test -n "${BOOT_A_LEFT}" || setenv BOOT_A_LEFT 3
test -n "${BOOT_B_LEFT}" || setenv BOOT_B_LEFT 3
run bs_show

# 2. Pick: the first slot of BOOT_ORDER with attempts left; count the attempt.
# itest compares hex, the counters' base; an unparsable counter counts as 0.
setenv bs_slot
for bs_name in ${BOOT_ORDER}; do
  if test -n "${bs_slot}"; then
    true
  elif test "${bs_name}" = A && itest 0x${BOOT_A_LEFT} > 0; then
    setexpr BOOT_A_LEFT 0x${BOOT_A_LEFT} - 1
    setenv bs_slot A
    setenv bs_boot_part 2
  elif test "${bs_name}" = B && itest 0x${BOOT_B_LEFT} > 0; then
    setexpr BOOT_B_LEFT 0x${BOOT_B_LEFT} - 1
    setenv bs_slot B
    setenv bs_boot_part 3
  fi
done

if test -z "${bs_slot}"; then
  echo "bootstate: no slot has attempts left: resetting the counters and the board"
  run bs_defaults
  run bs_show
  run bs_save
  reset
fi
echo "bootstate: booting slot ${bs_slot} (partition ${bs_boot_part})"
run bs_show
# A failed write still boots: the attempt is then simply not counted.
run bs_save || echo "bootstate: WARNING: could not write ${bs_file}"

# 3. Boot. Image (uncompressed) or Image.gz; booti recognises the compression
# and unpacks through kernel_comp_addr_r (64 MiB above the initramfs).
setenv bootargs "console=ttyAMA0 panic=-1 rauc.slot=${bs_slot}"
setexpr kernel_comp_addr_r ${ramdisk_addr_r} + 0x4000000
setenv bs_kernel Image.gz
if test -e ${devtype} ${devnum}:${bs_boot_part} Image; then
  setenv bs_kernel Image
fi
if fatload ${devtype} ${devnum}:${bs_boot_part} ${kernel_addr_r} ${bs_kernel}; then
  setenv kernel_comp_size ${filesize}
  if fatload ${devtype} ${devnum}:${bs_boot_part} ${ramdisk_addr_r} initramfs.img; then
    booti ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${fdtcontroladdr}
  fi
fi
# Only a failed load or booti gets here. The attempt is already counted, so
# resetting until the counter runs out falls back to the other slot.
echo "bootstate: slot ${bs_slot} did not boot: reset"
reset
