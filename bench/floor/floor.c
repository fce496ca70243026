/* bench/floor/floor.c: the least a static PID 1 can do for the gpt/ab_userdata mounts.
 *
 * The boot-time floor slotinit is measured against (bench/run). It does the
 * same mounts, binds, machine-id and by-slot links as slotinit booting slot A,
 * but with nothing a product needs: no config, no cmdline, no slot decision,
 * no partition names (the qemu/mkdisk device names are compiled in), no error
 * handling, no logging except two kmsg markers (after the modules, and right
 * before the switch to the system), and no freeing of the initramfs. Do not
 * ship it.
 *
 * Build: aarch64-linux-gnu-gcc -static -Os -s -o floor floor.c
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* qemu/mkdisk's order: bootconfig boot_a boot_b system_a system_b persistent. */
#define SYSTEM "/dev/vda4"
#define PERSISTENT "/dev/vda6"
#define P "/sysroot/persistent"
#define SLOT P "/slots/system_a"
#define JOURNAL_GID 101 /* systemd-journal in tests/guest/mkroot's /etc/group */

static void load_modules(void)
{
	static char list[8192];
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
		int m = open(line, O_RDONLY | O_CLOEXEC);
		if (m < 0)
			continue;
		syscall(SYS_finit_module, m, "", 0);
		close(m);
	}
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
