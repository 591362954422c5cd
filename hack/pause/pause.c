/*
 * The pod sandbox's init process for the local node (hack/control-plane
 * --node): it holds the pod's namespaces open, reaps orphaned children (it is
 * PID 1 when the pod shares its process namespace) and exits on SIGINT or
 * SIGTERM. Built static, so its image needs nothing but this file.
 */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) {
	(void)sig;
	_exit(0);
}

static void reap(int sig) {
	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0) {
	}
}

int main(void) {
	struct sigaction on_stop = {.sa_handler = stop};
	struct sigaction on_child = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
	sigemptyset(&on_stop.sa_mask);
	sigemptyset(&on_child.sa_mask);
	if (sigaction(SIGINT, &on_stop, NULL) != 0 || sigaction(SIGTERM, &on_stop, NULL) != 0 ||
	    sigaction(SIGCHLD, &on_child, NULL) != 0) {
		return 1;
	}
	for (;;) {
		pause();
	}
}
