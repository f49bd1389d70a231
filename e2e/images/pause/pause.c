/*
 * The pod sandbox's process (what registry.k8s.io/pause runs), built here by scripts/build-oci-images
 * because the e2e test bed reaches no registry: containerd needs a sandbox image to hold every pod's
 * namespaces. It sleeps until a signal comes, reaps the children it inherits as PID 1, and exits 0 on
 * SIGINT or SIGTERM. Linked statically (gcc -static -Os): the image holds this binary alone.
 */
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* write(2): no stdio needed. */
static void say(const char *message) {
    if (write(STDERR_FILENO, message, strlen(message)) < 0) {
    }
}

static void stop(int sig) {
    (void)sig;
    _exit(0);
}

static void reap(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(int argc, char **argv) {
    if (argc > 1 && (argv[1][0] == '-')) {
        say("pause: holds a pod's namespaces; exits 0 on SIGINT or SIGTERM\n");
        return 0;
    }
    struct sigaction stop_action = {.sa_handler = stop};
    struct sigaction reap_action = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
    sigemptyset(&stop_action.sa_mask);
    sigemptyset(&reap_action.sa_mask);
    if (sigaction(SIGINT, &stop_action, NULL) < 0 || sigaction(SIGTERM, &stop_action, NULL) < 0 ||
        sigaction(SIGCHLD, &reap_action, NULL) < 0) {
        say("pause: sigaction failed\n");
        return 1;
    }
    if (getpid() != 1) {
        say("pause: not PID 1, so it reaps only its own children\n");
    }
    for (;;) {
        pause();
    }
}
