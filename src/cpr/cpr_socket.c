/* The cpr channel's socket: a unix SOCK_SEQPACKET socket, so that each
 * message arrives whole in one recvmsg with its descriptors. The source
 * connects, sends, and waits for the answer; the destination listens,
 * accepts one source, reads, and answers once its machine is ready. Neither
 * side ever maps or touches guest RAM here. */
#include <godwit/cpr.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int socket_address(const char *path, struct sockaddr_un *addr, struct gw_error *err)
{
    *addr = (struct sockaddr_un){ .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof(addr->sun_path))
        return gw_error_set(err, -ENAMETOOLONG, "cpr channel unix:%s: a unix socket path has "
                            "at most %zu bytes", path, sizeof(addr->sun_path) - 1);
    strcpy(addr->sun_path, path);
    return 0;
}

static int send_message(int fd, const uint8_t *msg, size_t len, const int *fds, unsigned nfds,
                        struct gw_error *err)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * CPR_BLOCKS_MAX)];
        struct cmsghdr align;
    } control;
    struct iovec iov = { (void *)msg, len };
    struct msghdr hdr = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                          .msg_controllen = CMSG_SPACE(sizeof(int) * nfds) };
    struct cmsghdr *cmsg;

    memset(&control, 0, sizeof(control));
    cmsg = CMSG_FIRSTHDR(&hdr);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * nfds);
    if (sendmsg(fd, &hdr, MSG_NOSIGNAL) != (ssize_t)len)
        return gw_error_set(err, -errno, "cpr channel: cannot send the memory's descriptors: %s",
                            strerror(errno));
    return 0;
}

/* Waits for the answer, a byte on cancel_fd, or the timeout. */
static int wait_answer(int fd, int cancel_fd, struct gw_error *err)
{
    struct pollfd fds[2] = { { .fd = fd, .events = POLLIN }, { .fd = cancel_fd, .events = POLLIN } };
    uint8_t answer[CPR_ANSWER_MAX];
    int n = poll(fds, cancel_fd >= 0 ? 2 : 1, CPR_ANSWER_TIMEOUT_MS);
    ssize_t got;

    if (n < 0)
        return gw_error_set(err, -errno, "cpr channel: poll failed: %s", strerror(errno));
    if (cancel_fd >= 0 && fds[1].revents)
        return gw_error_set(err, -ECANCELED, "the migration was cancelled");
    if (n == 0)
        return gw_error_set(err, -ETIMEDOUT, "cpr channel: the destination did not answer "
                            "within %d s of receiving the memory", CPR_ANSWER_TIMEOUT_MS / 1000);
    got = recv(fd, answer, sizeof(answer), 0);
    if (got < 0)
        return gw_error_set(err, -errno, "cpr channel: cannot read the destination's answer: "
                            "%s", strerror(errno));
    if (got == 0)
        return gw_error_set(err, -EPIPE, "cpr channel: the destination closed the channel "
                            "before it answered (it exited or was killed); the guest stays "
                            "here");
    return cpr_answer_decode(answer, (size_t)got, err);
}

int cpr_send_memory(const char *path, const struct ram_block *blocks, unsigned nr_blocks,
                    int cancel_fd, struct gw_error *err)
{
    uint8_t msg[CPR_MESSAGE_MAX];
    int fds[CPR_BLOCKS_MAX], fd, rc;
    struct sockaddr_un addr;
    size_t len;

    if ((rc = cpr_blocks_shareable(blocks, nr_blocks, err)) < 0 ||
        (rc = socket_address(path, &addr, err)) < 0)
        return rc;
    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return gw_error_set(err, -errno, "cpr channel: socket failed: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        rc = gw_error_set(err, -errno, "cpr channel: cannot connect to unix:%s: %s (is the new "
                          "godwit-vm waiting there with --incoming's cpr channel?)", path,
                          strerror(errno));
        goto out;
    }
    for (unsigned i = 0; i < nr_blocks; i++)
        fds[i] = blocks[i].fd;
    len = cpr_memory_encode(blocks, nr_blocks, msg);
    if ((rc = send_message(fd, msg, len, fds, nr_blocks, err)) < 0)
        goto out;
    rc = wait_answer(fd, cancel_fd, err);
out:
    close(fd);
    return rc;
}

static int listen_socket(const char *path, struct gw_error *err)
{
    struct sockaddr_un addr;
    struct stat st;
    int fd, rc;

    if ((rc = socket_address(path, &addr, err)) < 0)
        return rc;
    /* A socket left by an earlier run is stale; anything else is not ours. */
    if (stat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(path);
    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return gw_error_set(err, -errno, "cpr channel: socket failed: %s", strerror(errno));
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 1) < 0) {
        rc = gw_error_set(err, -errno, "cpr channel: cannot listen on unix:%s: %s", path,
                          strerror(errno));
        close(fd);
        return rc;
    }
    return fd;
}

/* One recvmsg: the message and its descriptors, closed again on any error. */
static int receive_message(int conn, struct cpr_memory *memory, struct gw_error *err)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * CPR_BLOCKS_MAX)];
        struct cmsghdr align;
    } control;
    uint8_t msg[CPR_MESSAGE_MAX + 1];
    struct iovec iov = { msg, sizeof(msg) };
    struct msghdr hdr = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                          .msg_controllen = sizeof(control.buf) };
    int fds[CPR_BLOCKS_MAX];
    unsigned nfds = 0;
    ssize_t got = recvmsg(conn, &hdr, MSG_CMSG_CLOEXEC);
    int rc;

    if (got < 0)
        return gw_error_set(err, -errno, "cpr channel: cannot read: %s", strerror(errno));
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&hdr); c; c = CMSG_NXTHDR(&hdr, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        unsigned n = (unsigned)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (unsigned i = 0; i < n && nfds < CPR_BLOCKS_MAX; i++)
            memcpy(&fds[nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
    }
    if (hdr.msg_flags & (MSG_CTRUNC | MSG_TRUNC))
        rc = gw_error_set(err, -EPROTO, "cpr channel: the message or its descriptors were cut "
                          "short (at most %d blocks and %d bytes are allowed)", CPR_BLOCKS_MAX,
                          CPR_MESSAGE_MAX);
    else if (got == 0)
        rc = gw_error_set(err, -EPIPE, "cpr channel: the source closed the channel before it "
                          "sent the memory");
    else
        rc = cpr_memory_decode(msg, (size_t)got, fds, nfds, memory, err);
    if (rc < 0)
        for (unsigned i = 0; i < nfds; i++)
            close(fds[i]);
    return rc;
}

int cpr_incoming_receive(const char *path, struct cpr_memory *memory, struct gw_error *err)
{
    int listener = listen_socket(path, err), conn, rc;

    if (listener < 0)
        return listener;
    do
        conn = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
    while (conn < 0 && errno == EINTR);
    rc = conn < 0 ? gw_error_set(err, -errno, "cpr channel: accept failed: %s", strerror(errno))
                  : 0;
    close(listener);
    unlink(path);   /* one source, once */
    if (rc < 0)
        return rc;
    rc = receive_message(conn, memory, err);
    if (rc < 0) {
        cpr_incoming_answer(conn, rc, err ? err->msg : "bad memory message");
        return rc;
    }
    return conn;
}

void cpr_incoming_answer(int conn, int code, const char *message)
{
    uint8_t answer[CPR_ANSWER_MAX];
    size_t len = cpr_answer_encode(code, message, answer);

    if (conn < 0)
        return;
    if (send(conn, answer, len, MSG_NOSIGNAL) < 0) {
        /* the source went away: it decides for itself, nothing to tell */
    }
    close(conn);
}
