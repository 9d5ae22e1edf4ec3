#include "dest/ds_commit.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "protocol/proto_bytes.h"
#include "protocol/proto_packet.h"
#include "stage/stage.h"

#define ANSWER_SIZE PROTO_RESULT_PACKET_SIZE

/* Decoded field by field: the front end is trusted more than the network,
 * but a wrong index here would mark a ring that does not exist. */
static void apply(const uint8_t *m, struct ds_live *live)
{
	uint8_t kind = m[0];
	uint16_t index = get_le16(m + 2);
	if ((kind != DS_NOTICE_DOWN && kind != DS_NOTICE_UP) || m[1] != 0)
		stage_die(STAGE_EXIT_FAILED, "notice from the front end: unknown kind 0x%02x%02x", kind, m[1]);
	if (index >= live->n_inflaters)
		stage_die(STAGE_EXIT_FAILED, "notice from the front end: inflater %u, but there are %u", index,
			  live->n_inflaters);
	ds_live_set(live, index, kind == DS_NOTICE_UP);
}

bool ds_commit_read_notices(struct ds_notices *n, struct ds_live *live)
{
	for (;;) {
		uint8_t buf[64 * DS_NOTICE_SIZE];
		ssize_t got = recv(RECEIVE_FD_COMMIT, buf, sizeof(buf), MSG_DONTWAIT);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return true;
		if (got < 0)
			stage_die_errno(-errno, "reading notices from the front end");
		if (got == 0)
			return false;
		for (ssize_t k = 0; k < got; k++) {
			n->part[n->fill++] = buf[k];
			if (n->fill == DS_NOTICE_SIZE) {
				apply(n->part, live);
				n->fill = 0;
			}
		}
	}
}

/* Notices that came after the main thread stopped reading them: nothing
 * takes a buffer any more.  Read, so that the front end's end does not see
 * our close as a reset. */
static void discard_notices(void)
{
	uint8_t buf[256];
	ssize_t got;
	do
		got = recv(RECEIVE_FD_COMMIT, buf, sizeof(buf), MSG_DONTWAIT);
	while (got > 0 || (got < 0 && errno == EINTR));
}

void ds_commit_handover(int main_fd)
{
	uint8_t msg[8 + 2 + 2 * ANSWER_SIZE];
	memcpy(msg, DS_COMMIT_MAGIC, 8);
	put_le16(msg + 8, ANSWER_SIZE);
	proto_result_packet_encode(PROTO_OK, msg + 10);
	proto_result_packet_encode(PROTO_RESULT_LOCAL_FAILURE, msg + 10 + ANSWER_SIZE);

	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} control;
	memset(&control, 0, sizeof(control));
	struct iovec iov = { .iov_base = msg, .iov_len = sizeof(msg) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
			     .msg_controllen = sizeof(control.buf) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &main_fd, sizeof(int));
	discard_notices();
	ssize_t n;
	do
		n = sendmsg(RECEIVE_FD_COMMIT, &mh, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		stage_die_errno(-errno, "handing the result to the front end for the commit");
	if ((size_t)n != sizeof(msg))
		stage_die(STAGE_EXIT_FAILED, "handing the result to the front end: short write");
}
