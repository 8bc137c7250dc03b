/*
 * pause: the fleetcheck lab's pod sandbox process.
 *
 * Holds a pod's namespaces open: it sleeps until SIGINT or SIGTERM and then exits 0. As PID 1
 * of a pod with a shared PID namespace it also reaps orphaned children (SIGCHLD).
 * Built with `gcc -static -Os` by scripts/lab/images.py.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_stop(int sig) { (void)sig; stop = 1; }

static void on_child(int sig)
{
	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

static int handle(int sig, void (*fn)(int), int flags)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = fn;
	sa.sa_flags = flags;
	sigemptyset(&sa.sa_mask);
	return sigaction(sig, &sa, NULL);
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "-v") == 0) {
		puts("pause (fleetcheck lab) 1.0");
		return 0;
	}
	if (handle(SIGINT, on_stop, 0) || handle(SIGTERM, on_stop, 0) ||
	    handle(SIGCHLD, on_child, SA_NOCLDSTOP | SA_RESTART)) {
		perror("pause: sigaction");
		return 1;
	}
	/* Block the stop signals and wait with sigsuspend, so a signal that arrives between the
	 * check of `stop` and the wait cannot be lost. */
	sigset_t stops, waitmask;
	sigemptyset(&stops);
	sigaddset(&stops, SIGINT);
	sigaddset(&stops, SIGTERM);
	if (sigprocmask(SIG_BLOCK, &stops, &waitmask)) {
		perror("pause: sigprocmask");
		return 1;
	}
	sigdelset(&waitmask, SIGINT);
	sigdelset(&waitmask, SIGTERM);
	if (getpid() != 1)
		fputs("pause: warning: not running as PID 1\n", stderr);
	while (!stop)
		sigsuspend(&waitmask);
	fprintf(stderr, "pause: shutting down\n");
	return 0;
}
