#include "net/net_channel.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "net/net_socket.h"
#include "protocol/proto_bytes.h"

int net_psk_read(int fd, struct net_psk *psk, const char **why)
{
	memset(psk, 0, sizeof(*psk));
	size_t len = 0;
	for (;;) {
		ssize_t n = read(fd, psk->key + len, sizeof(psk->key) - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			*why = "reading the pre-shared key file";
			return -errno;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len == sizeof(psk->key)) {
			*why = "pre-shared key file is longer than 1024 bytes";
			return -EINVAL;
		}
	}
	while (len && (psk->key[len - 1] == '\n' || psk->key[len - 1] == '\r'))
		len--;
	if (len < PROTO_PSK_MIN) {
		*why = "pre-shared key file holds fewer than 16 bytes";
		return -EINVAL;
	}
	psk->len = len;
	return 0;
}

static int fresh_nonce(uint8_t nonce[PROTO_NONCE_SIZE])
{
	return getrandom(nonce, PROTO_NONCE_SIZE, 0) == PROTO_NONCE_SIZE ? 0 : -EIO;
}

int net_channel_offer(int fd, const struct proto_handshake *ours, const struct net_psk *psk, int *refused)
{
	uint8_t buf[PROTO_HANDSHAKE_SIZE];
	*refused = 0;
	proto_handshake_encode(ours, buf);
	int rc = net_send_all(fd, buf, sizeof(buf));
	if (rc < 0 || (rc = net_recv_all(fd, buf, sizeof(buf))) < 0)
		return rc;
	struct proto_handshake reply;
	enum proto_err err = proto_handshake_decode(buf, sizeof(buf), &reply);
	if (err != PROTO_OK)
		return (int)err;
	if (reply.status != PROTO_OK) {
		*refused = 1;
		return reply.status;
	}
	err = proto_handshake_match(&reply, ours);
	if (err != PROTO_OK || !(ours->features & PROTO_F_PSK))
		return (int)err;

	uint8_t nonce_r[PROTO_NONCE_SIZE], msg[PROTO_AUTH_SENDER_MSG], answer[PROTO_AUTH_REPLY_MSG];
	if ((rc = net_recv_all(fd, nonce_r, sizeof(nonce_r))) < 0 || (rc = fresh_nonce(msg)) < 0)
		return rc;
	proto_auth_proof(psk->key, psk->len, PROTO_AUTH_SENDER, ours->session_id, ours->channel_kind,
			 ours->channel_id, nonce_r, msg, msg + PROTO_NONCE_SIZE);
	if ((rc = net_send_all(fd, msg, sizeof(msg))) < 0 || (rc = net_recv_all(fd, answer, sizeof(answer))) < 0)
		return rc;
	uint32_t status = get_le32(answer);
	if (status != PROTO_OK) {
		*refused = 1;
		return status < _PROTO_E_MAX ? (int)status : PROTO_E_STATUS;
	}
	uint8_t expect[PROTO_SHA256_SIZE];
	proto_auth_proof(psk->key, psk->len, PROTO_AUTH_RECEIVER, ours->session_id, ours->channel_kind,
			 ours->channel_id, nonce_r, msg, expect);
	return proto_mac_equal(expect, answer + 4, sizeof(expect)) ? 0 : PROTO_E_PSK;
}

int net_channel_read_offer(int fd, struct proto_handshake *peer)
{
	uint8_t buf[PROTO_HANDSHAKE_SIZE];
	int rc = net_recv_all(fd, buf, sizeof(buf));
	if (rc < 0)
		return rc;
	enum proto_err err = proto_handshake_decode(buf, sizeof(buf), peer);
	if (err == PROTO_OK && peer->status != PROTO_OK)
		err = PROTO_E_STATUS; /* senders never send a status */
	return (int)err;
}

int net_channel_answer(int fd, const struct proto_handshake *agreed, enum proto_err status,
		       const struct net_psk *psk)
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
	int rc = net_send_all(fd, buf, sizeof(buf));
	if (rc < 0 || status != PROTO_OK || !(reply.features & PROTO_F_PSK))
		return rc;

	uint8_t nonce_r[PROTO_NONCE_SIZE], msg[PROTO_AUTH_SENDER_MSG], answer[PROTO_AUTH_REPLY_MSG] = { 0 };
	if ((rc = fresh_nonce(nonce_r)) < 0 || (rc = net_send_all(fd, nonce_r, sizeof(nonce_r))) < 0 ||
	    (rc = net_recv_all(fd, msg, sizeof(msg))) < 0)
		return rc;
	uint8_t expect[PROTO_SHA256_SIZE];
	proto_auth_proof(psk->key, psk->len, PROTO_AUTH_SENDER, reply.session_id, reply.channel_kind,
			 reply.channel_id, nonce_r, msg, expect);
	if (!proto_mac_equal(expect, msg + PROTO_NONCE_SIZE, sizeof(expect))) {
		put_le32(answer, PROTO_E_PSK);
		net_send_all(fd, answer, sizeof(answer));
		return PROTO_E_PSK;
	}
	put_le32(answer, PROTO_OK);
	proto_auth_proof(psk->key, psk->len, PROTO_AUTH_RECEIVER, reply.session_id, reply.channel_kind,
			 reply.channel_id, nonce_r, msg, answer + 4);
	return net_send_all(fd, answer, sizeof(answer));
}
