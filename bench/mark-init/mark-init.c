/* bench/mark-init/mark-init.c: /sbin/init of the bench disk's system slots.
 *
 * Writes one kernel-timestamped line ("bench: system init") as the system's
 * first action, then execs the test system's real init (tests/guest/report-init,
 * installed as /sbin/report-init by bench/run). It gives every variant the same
 * end point: the moment the system's init runs, after switch_root.
 *
 * Build: aarch64-linux-gnu-gcc -static -Os -s -o mark-init mark-init.c
 */
#include <fcntl.h>
#include <unistd.h>

int main(void)
{
	static const char line[] = "<6>bench: system init\n";
	int fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
	if (fd >= 0) {
		write(fd, line, sizeof line - 1);
		close(fd);
	}
	char *argv[] = {"/sbin/report-init", 0};
	execv(argv[0], argv);
	return 1;
}
