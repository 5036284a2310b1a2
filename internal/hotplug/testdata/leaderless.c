/*
 * leaderless MODE PATH: a process whose main thread exits while another
 * thread runs on, holding PATH: "map" maps a page of it and closes the fd,
 * "open" keeps it open, "map-unlinked" maps it, closes the fd and removes
 * PATH. It says "ready" once the main thread is about to exit; kill it to
 * end it. Built by busy_test.go (TestHoldersLeaderless).
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void *wait_forever(void *arg) {
	(void)arg;
	for (;;)
		pause();
	return NULL;
}

int main(int argc, char **argv) {
	if (argc != 3) {
		fprintf(stderr, "usage: leaderless map|open|map-unlinked PATH\n");
		return 2;
	}
	int fd = open(argv[2], O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		perror("open");
		return 1;
	}
	if (strcmp(argv[1], "open") != 0) {
		if (mmap(NULL, (size_t)getpagesize(), PROT_READ, MAP_PRIVATE, fd, 0) == MAP_FAILED) {
			perror("mmap");
			return 1;
		}
		close(fd);
		if (strcmp(argv[1], "map-unlinked") == 0 && unlink(argv[2]) != 0) {
			perror("unlink");
			return 1;
		}
	}
	pthread_t t;
	if (pthread_create(&t, NULL, wait_forever, NULL) != 0) {
		fprintf(stderr, "pthread_create failed\n");
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	pthread_exit(NULL);
}
