/* The pod sandbox's process: holds the pod's namespaces, exits on SIGINT/SIGTERM, reaps orphans
 * (when the pod shares its PID namespace). Same behaviour as Kubernetes' build/pause/linux/pause.c,
 * written here so the node needs no registry. Built statically by hack/node/images.sh. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_exit_signal(int sig) { _exit(sig == SIGTERM || sig == SIGINT ? 0 : 2); }

static void on_child(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction exit_action = {.sa_handler = on_exit_signal};
  struct sigaction child_action = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP};
  if (sigaction(SIGINT, &exit_action, NULL) < 0 || sigaction(SIGTERM, &exit_action, NULL) < 0 ||
      sigaction(SIGCHLD, &child_action, NULL) < 0) {
    return 1;
  }
  for (;;) pause();
}
