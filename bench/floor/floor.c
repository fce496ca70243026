/* bench/floor/floor.c: the least a static PID 1 can do for configs/rpi-uboot-rauc.toml.
 *
 * The boot-time floor slotinit is measured against (bench/run). It does the
 * work slotinit must do for that config when booting slot A: the same modules
 * (its /etc/slotinit/modules.load, one at a time in file order), the boot
 * counter write on the FAT bootconfig (RAUC's BOOT_A_LEFT decremented in the
 * copy of the uboot.env/uboot-redund.env pair not in use, as counter = "init"
 * does), the same mounts, binds, machine-id and by-slot links. It has nothing
 * a product needs: no config, no cmdline, no slot decision (slot A), no
 * partition names (the qemu/mkdisk device names are compiled in), no error
 * handling, no logging except kmsg markers (after the modules, after the
 * counter write, and right before the switch to the system), and no freeing
 * of the initramfs. Do not ship it.
 *
 * Build: aarch64-linux-gnu-gcc -static -Os -s -o floor floor.c
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* qemu/mkdisk's order: bootconfig boot_a boot_b system_a system_b persistent. */
#define BOOTCONFIG "/dev/vda1"
#define SYSTEM "/dev/vda4"
#define PERSISTENT "/dev/vda6"
#define P "/sysroot/persistent"
#define SLOT P "/slots/system_a"
#define JOURNAL_GID 101 /* systemd-journal in tests/guest/mkroot's /etc/group */

#define ENV_SIZE 0x4000 /* [bootstate.uboot-env] size */

/* One at a time, in file order: the first field of each line that is not a
 * comment ("PATH [early] [optional] [after=...]"); the file lists every
 * prerequisite before its user. A failure (an optional module) is skipped. */
static void load_modules(void)
{
	static char list[65536];
	int fd = open("/etc/slotinit/modules.load", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	ssize_t n = read(fd, list, sizeof list - 1);
	close(fd);
	if (n <= 0)
		return;
	list[n] = 0;
	for (char *line = list, *next; *line; line = next) {
		next = strchrnul(line, '\n');
		if (*next)
			*next++ = 0;
		line += strspn(line, " \t");
		if (*line == '#' || !*line)
			continue;
		line[strcspn(line, " \t")] = 0;
		int m = open(line, O_RDONLY | O_CLOEXEC);
		if (m < 0)
			continue;
		syscall(SYS_finit_module, m, "", 0);
		close(m);
	}
}

static uint32_t crc32(const unsigned char *p, size_t n)
{
	uint32_t c = 0xffffffff;
	while (n--) {
		c ^= *p++;
		for (int k = 0; k < 8; k++)
			c = c >> 1 ^ (0xedb88320 & -(c & 1));
	}
	return ~c;
}

/* U-Boot's redundant env copy: crc32 (LE, over the data area), flags, data. */
static int valid(const unsigned char *env)
{
	uint32_t crc;
	memcpy(&crc, env, 4);
	return crc == crc32(env + 5, ENV_SIZE - 5);
}

/* RAUC's contract with counter = "init": the copy in use (U-Boot's rules: the
 * valid one, else the higher flags, 0x00 after 0xff), BOOT_A_LEFT minus one
 * (hex without 0x) written into the other copy with flags + 1, synced before
 * the unmount. The variables stay in their order, padding is zeros: the bytes
 * slotinit writes. */
static void count_boot(void)
{
	static unsigned char env[2][ENV_SIZE], out[ENV_SIZE];
	static const char *const file[2] = {"/run/bootconfig/uboot.env",
					    "/run/bootconfig/uboot-redund.env"};
	int fd[2];
	mkdir("/run/bootconfig", 0700);
	mount(BOOTCONFIG, "/run/bootconfig", "vfat", MS_NOSUID | MS_NODEV | MS_NOEXEC, 0);
	for (int i = 0; i < 2; i++) {
		fd[i] = open(file[i], O_RDWR | O_CLOEXEC);
		if (pread(fd[i], env[i], ENV_SIZE, 0) != ENV_SIZE)
			env[i][0] = ~env[i][0]; /* short: not valid */
	}
	int ok0 = valid(env[0]), ok1 = valid(env[1]);
	unsigned char f0 = env[0][4], f1 = env[1][4];
	int cur = !ok0 ? 1 : !ok1 ? 0 : (f0 == 0xff && f1 == 0) ? 1 : (f0 == 0 && f1 == 0xff) ? 0 : f1 > f0;
	const char *in = (const char *)env[cur] + 5, *end = (const char *)env[cur] + ENV_SIZE;
	char *o = (char *)out + 5;
	while (in < end && *in) {
		size_t len = strnlen(in, end - in);
		if (!strncmp(in, "BOOT_A_LEFT=", 12)) {
			unsigned long left = strtoul(in + 12, 0, 16);
			o += sprintf(o, "BOOT_A_LEFT=%lx", left ? left - 1 : 0) + 1;
		} else {
			memcpy(o, in, len + 1);
			o += len + 1;
		}
		in += len + 1;
	}
	out[4] = env[cur][4] + 1;
	uint32_t crc = crc32(out + 5, ENV_SIZE - 5);
	memcpy(out, &crc, 4);
	pwrite(fd[!cur], out, ENV_SIZE, 0);
	fsync(fd[!cur]);
	close(fd[0]);
	close(fd[1]);
	umount("/run/bootconfig");
}

/* virtio_blk scans the partition table in its probe, so this rarely loops. */
static void wait_for(const char *dev)
{
	struct timespec ms = {0, 1000000};
	for (int i = 0; i < 10000 && access(dev, F_OK) != 0; i++)
		nanosleep(&ms, 0);
}

/* mkdir, and set the mode only when it was created (the mode bits mkdir ignores). */
static void dir(const char *path, mode_t mode, gid_t gid)
{
	if (mkdir(path, mode) == 0) {
		if (gid)
			chown(path, 0, gid);
		chmod(path, mode);
	}
}

static void bind(const char *from, const char *to)
{
	mount(from, to, 0, MS_BIND, 0);
}

static void machine_id(void)
{
	const char *path = P "/common/etc/machine-id";
	struct stat st;
	if (stat(path, &st) == 0 && st.st_size > 0)
		return;
	char uuid[40], id[33];
	int fd = open("/proc/sys/kernel/random/uuid", O_RDONLY);
	ssize_t n = read(fd, uuid, sizeof uuid);
	close(fd);
	int j = 0;
	for (int i = 0; i < n && j < 32; i++)
		if (uuid[i] != '-' && uuid[i] != '\n')
			id[j++] = uuid[i];
	id[j++] = '\n';
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0444);
	write(fd, id, j);
	fsync(fd);
	close(fd);
}

static void links(void)
{
	dir("/dev/disk", 0755, 0);
	dir("/dev/disk/by-slot", 0755, 0);
	dir("/dev/disk/by-slot/active", 0755, 0);
	dir("/dev/disk/by-slot/other", 0755, 0);
	symlink("../../../vda2", "/dev/disk/by-slot/active/boot");
	symlink("../../../vda4", "/dev/disk/by-slot/active/system");
	symlink("../../../vda3", "/dev/disk/by-slot/other/boot");
	symlink("../../../vda5", "/dev/disk/by-slot/other/system");
	symlink("../../vda1", "/dev/disk/by-slot/bootconfig");
	symlink("../../vda6", "/dev/disk/by-slot/persistent");
}

static void marker(const char *line)
{
	int fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
	write(fd, line, strlen(line));
	close(fd);
}

int main(void)
{
	umask(0);
	mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, 0);
	mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, 0);
	mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
	mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");

	load_modules();
	/* Lets bench/run split module loading (kernel work) from the rest. */
	marker("<6>floor: modules\n");
	wait_for(BOOTCONFIG);
	count_boot();
	marker("<6>floor: counter\n");
	wait_for(SYSTEM);
	wait_for(PERSISTENT);
	links();

	mount(SYSTEM, "/sysroot", "ext4", MS_RDONLY, 0);
	mount(PERSISTENT, P, "ext4", MS_NOATIME | MS_LAZYTIME, "commit=60,errors=remount-ro");
	dir(P "/slots", 0755, 0);
	dir(SLOT, 0755, 0);
	dir(SLOT "/var", 0755, 0);
	dir(SLOT "/var/tmp", 01777, 0);
	dir(SLOT "/var/log", 0755, 0);
	dir(SLOT "/var/log/journal", 0755, 0);
	dir(P "/home", 0755, 0);
	dir(P "/log", 0755, 0);
	dir(P "/log/journal", 02755, JOURNAL_GID);
	dir(P "/common", 0755, 0);
	dir(P "/common/etc", 0755, 0);
	machine_id();
	bind(SLOT "/var", "/sysroot/var");
	bind(P "/home", "/sysroot/home");
	bind(P "/log/journal", "/sysroot/var/log/journal");
	bind(P "/common/etc/machine-id", "/sysroot/etc/machine-id");

	/* Same point as slotinit's "switching to" line: before the moves. */
	marker("<6>floor: exec\n");
	mount("/dev", "/sysroot/dev", 0, MS_MOVE, 0);
	mount("/proc", "/sysroot/proc", 0, MS_MOVE, 0);
	mount("/sys", "/sysroot/sys", 0, MS_MOVE, 0);
	mount("/run", "/sysroot/run", 0, MS_MOVE, 0);
	chdir("/sysroot");
	mount(".", "/", 0, MS_MOVE, 0);
	chroot(".");
	chdir("/");
	char *argv[] = {"/sbin/init", 0};
	execv(argv[0], argv);
	return 1;
}
