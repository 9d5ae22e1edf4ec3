#include "net/net_channel.h"

#include <errno.h>
#include <string.h>

int net_channel_offer(struct net_conn *c, const struct proto_handshake *ours, int *refused)
{
	uint8_t buf[PROTO_HANDSHAKE_SIZE];
	*refused = 0;
	proto_handshake_encode(ours, buf);
	int rc = net_conn_send_all(c, buf, sizeof(buf));
	if (rc < 0 || (rc = net_conn_recv_all(c, buf, sizeof(buf))) < 0)
		return rc;
	struct proto_handshake reply;
	enum proto_err err = proto_handshake_decode(buf, sizeof(buf), &reply);
	if (err != PROTO_OK)
		return (int)err;
	if (reply.status != PROTO_OK) {
		*refused = 1;
		return reply.status;
	}
	return (int)proto_handshake_match(&reply, ours);
}

enum proto_err net_channel_decode_offer(const uint8_t buf[PROTO_HANDSHAKE_SIZE], struct proto_handshake *peer)
{
	enum proto_err err = proto_handshake_decode(buf, PROTO_HANDSHAKE_SIZE, peer);
	if (err == PROTO_OK && peer->status != PROTO_OK)
		err = PROTO_E_STATUS;
	return err;
}

int net_channel_answer(struct net_conn *c, const struct proto_handshake *agreed, enum proto_err status)
{
	/* A refusal still carries a well-formed handshake, so the sender can
	 * decode it and print our reason. */
	struct proto_handshake reply = {
		.geo = { .page_size = PROTO_PAGE_4K, .max_run_pages = 1, .guest_pages = 1 },
		.n_channels = 1,
	};
	if (agreed)
		reply = *agreed;
	reply.status = (uint16_t)status;
	uint8_t buf[PROTO_HANDSHAKE_SIZE];
	proto_handshake_encode(&reply, buf);
	return net_conn_send_all(c, buf, sizeof(buf));
}
