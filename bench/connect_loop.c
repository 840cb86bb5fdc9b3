/* Minimal blocking connect/accept loop: the reference the side script's ramp is
 * compared with (bench/ramp_vs_c.py). Usage:
 *   connect_loop server ADDR PORT N     listen, accept N, print "accepted N"
 *   connect_loop client ADDR PORT N     connect N, print "seconds rate"
 * Sockets are kept open (like the lab does) until the process is told to exit (stdin EOF).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: %s server|client ADDR PORT N\n", argv[0]); return 2; }
    int server = strcmp(argv[1], "server") == 0;
    long n = atol(argv[4]);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(atoi(argv[3]));
    inet_pton(AF_INET, argv[2], &sa.sin_addr);
    if (server) {
        int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(l, (struct sockaddr *)&sa, sizeof sa) || listen(l, 65535)) { perror("listen"); return 1; }
        printf("listening\n");
        fflush(stdout);
        for (long i = 0; i < n; i++)
            if (accept(l, NULL, NULL) < 0) { perror("accept"); return 1; }
        printf("accepted %ld\n", n);
    } else {
        double t0 = now();
        for (long i = 0; i < n; i++) {
            int s = socket(AF_INET, SOCK_STREAM, 0);
            if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof sa)) { perror("connect"); return 1; }
        }
        double dt = now() - t0;
        printf("%.4f %.1f\n", dt, n / dt);
    }
    fflush(stdout);
    char buf[1];
    while (read(0, buf, 1) > 0) {}
    return 0;
}
