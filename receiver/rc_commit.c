#include "receiver/rc_commit.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "protocol/proto_bytes.h"
#include "protocol/proto_packet.h"
#include "stage/stage.h"

#define ANSWER_SIZE PROTO_RESULT_PACKET_SIZE

void rc_commit_handover(int main_fd)
{
	uint8_t msg[8 + 2 + 2 * ANSWER_SIZE];
	memcpy(msg, RC_COMMIT_MAGIC, 8);
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
	ssize_t n;
	do
		n = sendmsg(RECEIVER_FD_COMMIT, &mh, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		stage_die_errno(-errno, "handing the result to the front end for the commit");
	if ((size_t)n != sizeof(msg))
		stage_die(STAGE_EXIT_FAILED, "handing the result to the front end: short write");
}
