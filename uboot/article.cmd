# uboot/article.cmd: the A/B article's boot-count contract in U-Boot hush: boot_slot=a|b,
# boot_a_left, boot_b_left, state in the pair boot:/uboot.env + uboot-redund.env (REFERENCE.md "Other boot-state
# conventions"; slotinit's side: src/state/uboot/article.rs, contract = "article").
#
# uboot/build --script uboot/article.cmd turns this into boot.scr (mkimage -T script); U-Boot's
# distro boot finds it on partition 1 (boot, FAT) of the first disk and runs it. The script is
# the only party that counts: slotinit runs with counter = "bootloader" and follows root=.
#
# The rules, and where each comes from:
#   - boot_slot names the slot to boot; a missing one is slot a, any value but "b" is slot a
#     (the article's `if test "${boot_slot}" = ...` comparison: a string test).
#   - boot_<slot>_left counts the attempts left; a missing one is 3 (the article's default).
#     Counters are read as U-Boot's setexpr reads its operands (cmd/setexpr.c get_arg: hextoul,
#     i.e. hex, 0x allowed, garbage 0) and written as it writes (env_set_hex: "%lx", hex without
#     0x). Every counter is normalised that way first, so the tests below compare strings.
#   - Each boot decrements the counter of boot_slot; a slot at zero is not booted: boot_slot
#     switches to the other slot (the article: "at zero, switch to the other slot"), whose
#     counter is then decremented. Both at zero: both back to 3, slot a (nothing else boots).
#   - Commit (slotinit mark-good, from the system once it is healthy): the counter back to 3.
# The slot boots from its own root: /boot/Image.gz and /boot/initramfs.img of rootfs_A
# (partition 2) or rootfs_B (partition 3), so an update of a slot carries its kernel; the
# cmdline names the root as the article does: root=PARTLABEL=rootfs_A|rootfs_B.
# Nothing else from the env reaches the cmdline (the env is not authenticated).

test -n "${devtype}" || setenv devtype virtio
test -n "${devnum}" || setenv devnum 0
setenv bs_config_part 1
setenv bs_size 0x4000
setenv bs_vars "boot_slot boot_a_left boot_b_left"
# Scratch for the env block: pxefile_addr_r is unused by this flow.
setenv bs_addr ${pxefile_addr_r}

setenv bs_show 'echo "bootstate: boot_slot=${boot_slot} boot_a_left=${boot_a_left} boot_b_left=${boot_b_left}"'
setenv bs_defaults 'setenv boot_slot a; setenv boot_a_left 3; setenv boot_b_left 3'

# The state lives in a redundant pair, boot:/uboot.env + boot:/uboot-redund.env, as U-Boot's own
# CONFIG_ENV_REDUNDANT env (meta-mender requires it; a single copy rewritten in place has no
# fallback when power fails mid-write): each copy a CRC-32, a flags byte, then the data. What
# U-Boot does with it, in hush (env/common.c env_import_redund: the copy whose CRC holds; both:
# the higher flags, except that 0 follows 0xff; equal: the first; env/fat.c env_fat_save with
# CONFIG_SYS_REDUNDAND_ENVIRONMENT: the next save goes to the other copy with flags + 1).
# `env import -c` / `env export -c` know only the single layout (CRC, data): a copy is moved
# into that layout to be checked and back out of it to be written.
setenv bs_files1 uboot.env
setenv bs_files2 uboot-redund.env
setexpr bs_addr2 ${bs_addr} + ${bs_size}
setexpr bs_s ${bs_addr2} + ${bs_size}
setexpr bs_ssize ${bs_size} - 1
setexpr bs_n ${bs_size} - 5
setenv bs_clear 'for bs_v in ${bs_vars}; do setenv ${bs_v}; done'
# bs_check: the copy at ${bs_c} -> bs_ok (1: CRC good, its variables imported), bs_flag.
setenv bs_check 'run bs_clear; setenv bs_ok; mw.b ${bs_s} 0 ${bs_size}; cp.b ${bs_c} ${bs_s} 4; setexpr bs_t ${bs_c} + 5; setexpr bs_u ${bs_s} + 4; cp.b ${bs_t} ${bs_u} ${bs_n}; if env import -c ${bs_s} ${bs_ssize} ${bs_vars}; then setenv bs_ok 1; fi; setexpr bs_t ${bs_c} + 4; setexpr.b bs_flag *${bs_t}'
# bs_save: the variables into the copy that is not current, flags + 1; it becomes current.
setenv bs_save 'if itest.b 0x${bs_flag} == 0xff; then setenv bs_flag 0; else setexpr bs_flag ${bs_flag} + 1; fi; if test "${bs_cur}" = 1; then setenv bs_cur 2; else setenv bs_cur 1; fi; if test "${bs_cur}" = 1; then setenv bs_file ${bs_files1}; else setenv bs_file ${bs_files2}; fi; echo "bootstate: writing ${bs_file}"; mw.b ${bs_s} 0 ${bs_size}; env export -c -s ${bs_ssize} ${bs_s} ${bs_vars} && mw.b ${bs_addr} 0 ${bs_size} && cp.b ${bs_s} ${bs_addr} 4 && setexpr bs_t ${bs_addr} + 4 && mw.b ${bs_t} ${bs_flag} 1 && setexpr bs_t ${bs_addr} + 5 && setexpr bs_u ${bs_s} + 4 && cp.b ${bs_u} ${bs_t} ${bs_n} && fatwrite ${devtype} ${devnum}:${bs_config_part} ${bs_addr} ${bs_file} ${bs_size}'

# 1. Load both copies (each buffer zeroed first: a short file fails its CRC) and take the
# current one; none valid: the defaults. A copy that failed its CRC is never written back.
echo "bootstate: reading ${devtype} ${devnum}:${bs_config_part} ${bs_files1} + ${bs_files2}"
mw.b ${bs_addr} 0 ${bs_size}
mw.b ${bs_addr2} 0 ${bs_size}
fatload ${devtype} ${devnum}:${bs_config_part} ${bs_addr} ${bs_files1} ${bs_size}
fatload ${devtype} ${devnum}:${bs_config_part} ${bs_addr2} ${bs_files2} ${bs_size}
setenv bs_c ${bs_addr2}
run bs_check
setenv bs_ok2 ${bs_ok}
setenv bs_flag2 ${bs_flag}
setenv bs_c ${bs_addr}
run bs_check
setenv bs_ok1 ${bs_ok}
setenv bs_flag1 ${bs_flag}
setenv bs_cur
if test -n "${bs_ok1}" && test -n "${bs_ok2}"; then
  setenv bs_cur 1
  if itest.b 0x${bs_flag1} == 0xff && itest.b 0x${bs_flag2} == 0; then
    setenv bs_cur 2
  elif itest.b 0x${bs_flag2} == 0xff && itest.b 0x${bs_flag1} == 0; then
    setenv bs_cur 1
  elif itest.b 0x${bs_flag2} > 0x${bs_flag1}; then
    setenv bs_cur 2
  fi
elif test -n "${bs_ok1}"; then
  setenv bs_cur 1
elif test -n "${bs_ok2}"; then
  setenv bs_cur 2
fi
if test "${bs_cur}" = 2; then
  setenv bs_c ${bs_addr2}
  run bs_check
  setenv bs_flag ${bs_flag2}
elif test "${bs_cur}" = 1; then
  setenv bs_flag ${bs_flag1}
else
  echo "bootstate: no valid copy: using the defaults"
  run bs_clear
  run bs_defaults
  # The first save goes to copy 1, flags 1.
  setenv bs_cur 2
  setenv bs_flag 0
fi
test -n "${boot_slot}" || setenv boot_slot a
test -n "${boot_a_left}" || setenv boot_a_left 3
test -n "${boot_b_left}" || setenv boot_b_left 3
setexpr boot_a_left "${boot_a_left}" + 0
setexpr boot_b_left "${boot_b_left}" + 0
test "${boot_slot}" = b || setenv boot_slot a
run bs_show

# 2. At zero: the other slot; both at zero: both reset, slot a.
if test "${boot_slot}" = a && test "${boot_a_left}" = 0; then
  if test "${boot_b_left}" = 0; then
    echo "bootstate: no slot has attempts left: both back to 3"
    run bs_defaults
  else
    echo "bootstate: slot a has no attempts left: switching to b"
    setenv boot_slot b
  fi
elif test "${boot_slot}" = b && test "${boot_b_left}" = 0; then
  if test "${boot_a_left}" = 0; then
    echo "bootstate: no slot has attempts left: both back to 3"
    run bs_defaults
  else
    echo "bootstate: slot b has no attempts left: switching to a"
    setenv boot_slot a
  fi
fi

# 3. Count this attempt, write, boot.
if test "${boot_slot}" = b; then
  setexpr boot_b_left ${boot_b_left} - 1
  setenv bs_part 3
  setenv bs_label rootfs_B
else
  setexpr boot_a_left ${boot_a_left} - 1
  setenv bs_part 2
  setenv bs_label rootfs_A
fi
echo "bootstate: booting slot ${boot_slot} (partition ${bs_part})"
run bs_show
run bs_save || echo "bootstate: WARNING: could not write ${bs_file}"

setenv bootargs "console=ttyAMA0 panic=-1 root=PARTLABEL=${bs_label}"
setexpr kernel_comp_addr_r ${ramdisk_addr_r} + 0x4000000
if load ${devtype} ${devnum}:${bs_part} ${kernel_addr_r} /boot/Image.gz; then
  setenv kernel_comp_size ${filesize}
  if load ${devtype} ${devnum}:${bs_part} ${ramdisk_addr_r} /boot/initramfs.img; then
    booti ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${fdtcontroladdr}
  fi
fi
# A failed load or booti: the attempt is counted, so resetting falls back to the other slot.
echo "bootstate: slot ${boot_slot} did not boot: reset"
reset
