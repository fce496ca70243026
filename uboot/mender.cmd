# uboot/mender.cmd: what meta-mender's U-Boot integration does, in U-Boot hush, for a U-Boot
# built without it (slotinit's side: src/state/uboot/mender.rs, contract = "mender").
#
# Sources: meta-mender meta-mender-core/recipes-bsp/u-boot/patches/
# 0001-Generic-boot-code-for-Mender.patch (include/env_mender.h: mender_setup,
# mender_altbootcmd, mender_try_to_recover, the default env, CONFIG_MENDER_BOOTCOMMAND) and
# U-Boot's boot counter in the env: drivers/bootcount/bootcount_env.c (bootcount_load/store:
# counted and saved only while upgrade_available is non-zero), include/bootcount.h
# (bootcount_inc, bootcount_error: bootlimit non-zero and bootcount > bootlimit) and
# common/autoboot.c (then altbootcmd runs instead of bootcmd). Debian's u-boot-qemu has no
# CONFIG_BOOTCOUNT_LIMIT/CONFIG_BOOTCOUNT_ENV (no "bootlimit" in its u-boot.bin), so this
# script counts, as that C code does, before it boots.
#
# State in boot:/uboot.env (meta-mender keeps it in U-Boot's own env; here the script's file
# holds the variables below, which is what fw_printenv and slotinit read and write):
#   mender_boot_part      the root partition's number: 2 (rootfs A) or 3 (rootfs B)
#   mender_boot_part_hex  the same in hex, for `load virtio 0:<hex>`
#   upgrade_available     1 while a new root is on trial (the client's install), else 0
#   bootcount             boots of the trial so far, counted here
#   bootlimit             1 (meta-mender's default): the second boot of a trial rolls back
# Commit (the client's `mender commit`, slotinit mark-good): upgrade_available=0, bootcount=0.
#
# Differences from the C code, none of them reachable with meta-mender's values: U-Boot reads
# upgrade_available, bootcount and bootlimit as decimal (env_get_ulong(.., 10, ..)) and writes
# bootcount in decimal (env_set_ulong); hush only has setexpr and itest, which read and write
# hex. Both agree on 0 to 9, so this script needs bootlimit below 9.
# The kernel and initramfs come from the root itself (/boot, as MENDER_LOAD_KERNEL_AND_FDT
# loads /boot/${mender_kernel_name}), so each slot carries its own kernel.

test -n "${devtype}" || setenv devtype virtio
test -n "${devnum}" || setenv devnum 0
setenv bs_config_part 1
setenv bs_size 0x4000
setenv bs_vars "mender_boot_part mender_boot_part_hex upgrade_available bootcount bootlimit"
setenv bs_addr ${pxefile_addr_r}

setenv bs_show 'echo "bootstate: mender_boot_part=${mender_boot_part} upgrade_available=${upgrade_available} bootcount=${bootcount} bootlimit=${bootlimit}"'
# env_mender.h's default env.
setenv bs_defaults 'setenv bootlimit 1; setenv bootcount 0; setenv upgrade_available 0; setenv mender_boot_part 2; setenv mender_boot_part_hex 2'
# env_mender.h's mender_altbootcmd (without its `run mender_setup`: step 3 does that).
setenv mender_altbootcmd 'if test "${mender_boot_part}" = 2; then setenv mender_boot_part 3; setenv mender_boot_part_hex 3; else setenv mender_boot_part 2; setenv mender_boot_part_hex 2; fi; setenv upgrade_available 0; run bs_save'

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
# A missing mender_boot_part would make root=/dev/vda: the default env's partition 2.
test -n "${mender_boot_part}" || setenv mender_boot_part 2
test -n "${mender_boot_part_hex}" || setenv mender_boot_part_hex ${mender_boot_part}
test -n "${upgrade_available}" || setenv upgrade_available 0
test -n "${bootcount}" || setenv bootcount 0
test -n "${bootlimit}" || setenv bootlimit 0
run bs_show

# 2. bootcount_inc + bootcount_error: count a trial's boot and save it; past bootlimit,
# altbootcmd: the other root, upgrade_available=0, saved.
if itest "${upgrade_available}" != 0; then
  setexpr bootcount "${bootcount}" + 1
  run bs_save || echo "bootstate: WARNING: could not write ${bs_file}"
  if itest "${bootlimit}" != 0 && itest "${bootcount}" > "${bootlimit}"; then
    echo "Warning: Bootlimit (${bootlimit}) exceeded. Using altbootcmd."
    run mender_altbootcmd
  fi
fi

# 3. mender_setup and the boot command: root=<device><mender_boot_part>, the kernel from that
# root's /boot; then mender_try_to_recover: reset while on trial (counted: the next boot rolls
# back), else stop.
echo "bootstate: booting slot ${mender_boot_part} (partition ${mender_boot_part_hex})"
run bs_show
setenv bootargs "console=ttyAMA0 panic=-1 root=/dev/vda${mender_boot_part}"
setexpr kernel_comp_addr_r ${ramdisk_addr_r} + 0x4000000
if load ${devtype} ${devnum}:${mender_boot_part_hex} ${kernel_addr_r} /boot/Image.gz; then
  setenv kernel_comp_size ${filesize}
  if load ${devtype} ${devnum}:${mender_boot_part_hex} ${ramdisk_addr_r} /boot/initramfs.img; then
    booti ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${fdtcontroladdr}
  fi
fi
echo "bootstate: slot ${mender_boot_part} did not boot"
if test "${upgrade_available}" = 1; then
  reset
fi
