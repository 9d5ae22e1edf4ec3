#include "dest/ds_commit.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "protocol/proto_bytes.h"
#include "stage/stage.h"


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

static void send_magic(const char *magic, const char *what)
{
	ssize_t n;
	do
		n = send(RECEIVE_FD_COMMIT, magic, 8, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		stage_die_errno(-errno, "%s", what);
	if (n != 8)
		stage_die(STAGE_EXIT_FAILED, "%s: short write", what);
}

bool ds_commit_ask(struct ds_notices *n)
{
	send_magic(DS_COMMIT_MAGIC, "asking the front end to commit");
	for (;;) {
		uint8_t b;
		ssize_t got = recv(RECEIVE_FD_COMMIT, &b, 1, 0);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			stage_die_errno(-errno, "waiting for the front end's commit");
		if (got == 0)
			stage_die(STAGE_EXIT_FAILED, "the front end went away during the commit");
		n->part[n->fill++] = b;
		if (n->fill < DS_NOTICE_SIZE)
			continue;
		n->fill = 0;
		uint8_t kind = n->part[0];
		if (kind == DS_NOTICE_DOWN || kind == DS_NOTICE_UP)
			continue; /* the inflaters are done: nothing to route */
		if ((kind != DS_DECISION_COMMITTED && kind != DS_DECISION_FAILED) || n->part[1] || n->part[2] ||
		    n->part[3])
			stage_die(STAGE_EXIT_FAILED, "the front end's commit: unknown answer 0x%02x", kind);
		return kind == DS_DECISION_COMMITTED;
	}
}

void ds_commit_answered(void)
{
	send_magic(DS_ANSWERED_MAGIC, "telling the front end the sender has its answer");
}

void ds_commit_unsent(void)
{
	send_magic(DS_UNSENT_MAGIC, "telling the front end the sender does not have its answer");
}
