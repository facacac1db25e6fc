/*
 * berth: the command-line front end.
 *
 * Starting CPython and importing the engine costs ~55 ms on every command,
 * more than half of a whole `berth run --rm`. So this small client hands the
 * command to the CLI server (engine/cli/server.py), a resident Python process
 * with the engine already imported that forks one child per command. The child
 * gets this process's stdin/stdout/stderr (SCM_RIGHTS), argv, environment,
 * working directory and umask, runs the command exactly as `berth` would, and
 * sends back the exit code. Signals this process receives are forwarded to it.
 *
 * The server holds no state of its own: when it is absent, refuses us (other
 * namespaces, another uid, a different install) or BERTH_CLI_SERVER=0, this
 * client execs the Python CLI directly, with the same result, only slower.
 * A missing server is started in the background for the next command
 * (unless BERTH_CLI_SPAWN=0, as in the exit commands conmon runs).
 *
 * Built by scripts/setup.sh:
 *   cc -O2 -DBERTH_PYTHON='"<venv>/bin/python"' -DBERTH_SOCKET='"/run/berth-cli/<id>.sock"'
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef BERTH_PYTHON
#error "BERTH_PYTHON must name the virtual environment's interpreter"
#endif
#ifndef BERTH_SOCKET
#error "BERTH_SOCKET must name the CLI server's socket"
#endif

#define MAGIC "berth-cli-2"
/* The Python CLI, run directly (-I: no user site, no cwd on sys.path). */
#define PY_MAIN "from engine.cli.main import run; run()"
#define PY_SERVER "from engine.cli.server import serve; serve()"

extern char **environ;

static volatile sig_atomic_t child_pid = 0;
/* BERTH_CLI_DEBUG=1: say on stderr who runs the command (and why not the server). */
static int debug = 0;

static void say(const char *what, const char *why) {
    if (debug)
        fprintf(stderr, "berth: %s%s%s\n", what, why ? ": " : "", why ? why : "");
}

/* A signal someone sent this process (kill) goes to the command's process; one
 * from the terminal (Ctrl-C, Ctrl-\\, hangup) to its whole process group, as
 * the terminal would have sent it to the Python CLI and its subprocesses. */
static void forward(int sig, siginfo_t *info, void *ctx) {
    (void)ctx;
    if (child_pid <= 0)
        return;
    int by_process = info && (info->si_code == SI_USER || info->si_code == SI_QUEUE);
    kill(by_process ? (pid_t)child_pid : -(pid_t)child_pid, sig);
}

/* Ctrl-Z: stop the command's group, stop here; on `fg`, continue both. */
static void suspend(int sig, siginfo_t *info, void *ctx) {
    (void)sig, (void)info, (void)ctx;
    if (child_pid > 0)
        kill(-(pid_t)child_pid, SIGSTOP);
    raise(SIGSTOP);
    if (child_pid > 0)
        kill(-(pid_t)child_pid, SIGCONT);
}

static void exec_python(int argc, char **argv) {
    char **args = calloc((size_t)argc + 4, sizeof(char *));
    if (!args) {
        perror("berth");
        exit(125);
    }
    args[0] = BERTH_PYTHON;
    args[1] = "-I";
    args[2] = "-c";
    args[3] = PY_MAIN;
    for (int i = 1; i < argc; i++)
        args[3 + i] = argv[i];
    execv(BERTH_PYTHON, args);
    fprintf(stderr, "berth: cannot run %s: %s\n", BERTH_PYTHON, strerror(errno));
    exit(125);
}

static const char *socket_path(void) {
    const char *s = getenv("BERTH_CLI_SOCKET");
    return (s && *s) ? s : BERTH_SOCKET;
}

/* Start the server in the background (it exits at once if another one runs). */
static void spawn_server(void) {
    pid_t pid = fork();
    if (pid < 0)
        return;
    if (pid > 0) {
        waitpid(pid, NULL, 0);
        return;
    }
    setsid();
    if (fork() != 0)
        _exit(0);
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
        if (null > 2)
            close(null);
    }
    /* Close everything else we may have inherited. */
    for (int fd = 3; fd < 1024; fd++)
        close(fd);
    if (chdir("/") != 0)
        _exit(1);
    char *args[] = {BERTH_PYTHON, "-I", "-c", PY_SERVER, (char *)socket_path(), NULL};
    execv(BERTH_PYTHON, args);
    _exit(1);
}

/* Append a NUL-terminated string to a growing buffer. */
struct buf {
    char *p;
    size_t len, cap;
};

static int put(struct buf *b, const char *s) {
    size_t n = strlen(s) + 1;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 8192;
        while (cap < b->len + n)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return 0;
}

/* The signals this process ignores (`nohup berth ...`): they stay ignored in
 * the command, and are not forwarded. */
static int ignored[NSIG];

static int put_ignored(struct buf *b) {
    char list[NSIG * 4] = "", num[8];
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction old;
        if (sig == SIGKILL || sig == SIGSTOP || sigaction(sig, NULL, &old) != 0)
            continue;
        if (old.sa_handler == SIG_IGN) {
            ignored[sig] = 1;
            snprintf(num, sizeof(num), "%s%d", list[0] ? "," : "", sig);
            strcat(list, num);
        }
    }
    return put(b, list);
}

static int read_line(int fd, char *line, size_t size) {
    size_t n = 0;
    while (n + 1 < size) {
        ssize_t r = read(fd, line + n, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        if (line[n] == '\n') {
            line[n] = 0;
            return 1;
        }
        n++;
    }
    line[n] = 0;
    return 0;
}

int main(int argc, char **argv) {
    const char *dbg = getenv("BERTH_CLI_DEBUG");
    debug = dbg && *dbg && strcmp(dbg, "0") != 0;
    const char *off = getenv("BERTH_CLI_SERVER");
    if (off && strcmp(off, "0") == 0) {
        say("running in-process", "BERTH_CLI_SERVER=0");
        exec_python(argc, argv);
    }

    /* stdio must be open to be passed on; a closed one reads as /dev/null. */
    for (int fd = 0; fd < 3; fd++)
        if (fcntl(fd, F_GETFD) < 0)
            open("/dev/null", O_RDWR);

    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    const char *sock = socket_path();
    if (s < 0 || strlen(sock) >= sizeof(addr.sun_path))
        exec_python(argc, argv);
    strcpy(addr.sun_path, sock);
    if (connect(s, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        int err = errno;
        say("running in-process: no CLI server", strerror(err));
        const char *spawn = getenv("BERTH_CLI_SPAWN"); /* "0": conmon's exit commands */
        if ((err == ENOENT || err == ECONNREFUSED) && !(spawn && strcmp(spawn, "0") == 0))
            spawn_server();
        close(s);
        exec_python(argc, argv);
    }

    /* Only a server of our own user gets our stdio and environment. */
    struct ucred cred;
    socklen_t clen = sizeof(cred);
    if (getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0 || cred.uid != geteuid()) {
        say("running in-process: the CLI server's socket belongs to another user", NULL);
        close(s);
        exec_python(argc, argv);
    }

    /* Room for the length, filled in below. */
    struct buf b = {malloc(8192), sizeof(uint32_t), 8192};
    if (!b.p)
        exec_python(argc, argv);
    char cwd[4096], num[32];
    if (!getcwd(cwd, sizeof(cwd)))
        exec_python(argc, argv); /* a deleted cwd: let Python report it */
    mode_t mask = umask(0);
    umask(mask);
    int bad = put(&b, MAGIC) || put(&b, BERTH_PYTHON) || put(&b, cwd);
    snprintf(num, sizeof(num), "%o", (unsigned)mask);
    bad = bad || put(&b, num) || put_ignored(&b);
    snprintf(num, sizeof(num), "%d", argc - 1);
    bad = bad || put(&b, num);
    for (int i = 1; i < argc && !bad; i++)
        bad = put(&b, argv[i]);
    for (char **e = environ; *e && !bad; e++)
        bad = put(&b, *e);
    if (bad)
        exec_python(argc, argv);

    /* One message: a 4-byte length, then the strings, with fds 0-2 attached. */
    uint32_t len = (uint32_t)(b.len - sizeof(uint32_t));
    memcpy(b.p, &len, sizeof(len));
    struct iovec iov = {b.p, b.len};
    int fds[3] = {0, 1, 2};
    char cbuf[CMSG_SPACE(sizeof(fds))];
    memset(cbuf, 0, sizeof(cbuf));
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                         .msg_controllen = sizeof(cbuf)};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(fds));
    memcpy(CMSG_DATA(cm), fds, sizeof(fds));
    ssize_t sent = sendmsg(s, &msg, MSG_NOSIGNAL);
    if (sent <= 0) {
        close(s);
        exec_python(argc, argv);
    }
    /* The rest of a long message (a large environment), without fds. */
    for (size_t done = (size_t)sent; done < b.len;) {
        ssize_t w = send(s, b.p + done, b.len - done, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            close(s);
            exec_python(argc, argv);
        }
        done += (size_t)w;
    }

    /* "P<pid>": the command runs in that process; "N<why>": not served here. */
    char line[256];
    if (!read_line(s, line, sizeof(line)) || line[0] != 'P') {
        say("running in-process: the CLI server refused", line[0] == 'N' ? line + 1 : "no answer");
        close(s);
        exec_python(argc, argv); /* nothing ran: the Python CLI does it all */
    }
    child_pid = atoi(line + 1);
    if (debug)
        fprintf(stderr, "berth: served by the CLI server (pid %d)\n", (int)child_pid);
    struct sigaction sa = {0};
    sa.sa_sigaction = forward;
    sa.sa_flags = SA_RESTART | SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        if (!ignored[sigs[i]])
            sigaction(sigs[i], &sa, NULL);
    if (!ignored[SIGTSTP]) {
        sa.sa_sigaction = suspend;
        sigaction(SIGTSTP, &sa, NULL);
    }

    /* "X<code>": the command's exit code; "S<signal>": it was killed by that
     * signal, and so are we (as if the command had run in this process). */
    if (read_line(s, line, sizeof(line))) {
        if (line[0] == 'X')
            return atoi(line + 1);
        if (line[0] == 'S') {
            int sig = atoi(line + 1);
            signal(sig, SIG_DFL);
            raise(sig);
            return 128 + sig;
        }
    }
    fprintf(stderr, "berth: the command server lost the command (no exit code)\n");
    return 125;
}
